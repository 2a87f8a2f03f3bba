"""Entry points: the `aether` command line and the process runner. May import anything; nothing imports it."""
