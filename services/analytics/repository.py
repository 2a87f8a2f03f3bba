"""Every SQL statement of the analytics service (schema `analytics`)."""

from __future__ import annotations

SCHEMA = "analytics"
