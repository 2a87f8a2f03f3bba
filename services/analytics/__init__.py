"""Analytics service: market-data features and model outputs."""
