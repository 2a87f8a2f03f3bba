"""The reconnect delay every venue stream uses: exponential backoff with full jitter."""

from __future__ import annotations

import random


def full_jitter_s(rng: random.Random, failures: int, initial_s: float, max_s: float) -> float:
    """Uniform in [0, min(max_s, initial_s * 2**(failures-1))] (AWS "full jitter")."""
    ceiling = min(max_s, initial_s * 2 ** max(0, failures - 1))
    return rng.uniform(0, ceiling)
