"""Kraken spot: the REST adapter (`adapter.KrakenVenue`, signing, nonces, rate counters, `wire` parsers) and the WebSocket v2 public feed (`ws_public`, `ws_wire`, `book`)."""
