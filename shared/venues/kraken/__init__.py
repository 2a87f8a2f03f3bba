"""Kraken spot: REST adapter and WebSocket v2 public market data."""
