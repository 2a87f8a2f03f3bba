"""Use cases of the hitl service: repositories, shared.domain and the outbox inside one unit of work."""

from __future__ import annotations
