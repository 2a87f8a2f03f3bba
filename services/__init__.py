"""Aether services: one FastAPI app and one schema each."""
