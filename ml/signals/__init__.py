"""Signals: the champion model scores streaming features into `ml.signals.v1`; a follower strategy turns signals into
orders on `oms.commands.v1` carrying the model's confidence (docs/ml.md)."""
