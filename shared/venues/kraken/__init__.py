"""Kraken spot: the REST adapter (`adapter.KrakenVenue`), its signing, nonces, rate counters and wire parsers."""
