"""Backfills of history into the `marketdata` schema: CoinGecko price series and Kraken public trades."""
