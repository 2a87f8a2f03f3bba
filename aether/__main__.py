"""`python -m aether ...`: the same as the `aether` console script."""

from aether.cli import app

app()
