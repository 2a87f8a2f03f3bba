"""Replay of market data onto the `marketdata.*` topics: from a file, or from a seeded synthetic market."""
