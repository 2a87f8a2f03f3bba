"""Hand-written fakes for tests: an in-memory venue and a fault-injecting venue wrapper."""
