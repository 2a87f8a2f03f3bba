"""Market data: ingestion, replay and features."""
