"""Microstructure features: pure definitions, a batch (polars) and a streaming engine that agree exactly."""
