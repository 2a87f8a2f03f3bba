"""What every test needs once: the test signing key and tokens, factories, the paper venue fed through Kafka."""
