"""Use cases of the reports service: repositories, shared.domain and the outbox inside one unit of work."""

from __future__ import annotations
