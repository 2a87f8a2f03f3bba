"""Errors of the ops jobs: one line each, naming what is wrong; never a secret."""

from __future__ import annotations


class OpsError(Exception):
    """A job cannot proceed (bad input, missing bucket or key, unreachable backend); nothing was changed."""


class IntegrityError(OpsError):
    """An object failed verification (tampered, truncated, reordered, wrong key): nothing is restored or deleted."""
