"""Models: datasets from the market-data store, purged validation, trainers, tracking, search, retraining, signals."""
