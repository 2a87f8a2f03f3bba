"""What every test needs once: the test signing key and tokens, factories, the paper venue fed through Kafka
(or driven directly), the hedge service's handle, outbox and topic helpers, market-data and matching
constants."""
