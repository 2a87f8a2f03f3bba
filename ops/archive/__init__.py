"""`aether ops archive` and `aether ops prometheus-snapshot`: time series past the retention policy go to Parquet in S3."""
