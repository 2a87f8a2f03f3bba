"""Market-data ingestion: the store repository, the Kafka sink, data-quality checks (and the backfills)."""
