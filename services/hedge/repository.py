"""Every SQL statement of the hedge service (schema `hedge`)."""

from __future__ import annotations

SCHEMA = "hedge"
