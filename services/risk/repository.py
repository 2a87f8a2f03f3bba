"""Every SQL statement of the risk service (schema `risk`)."""

from __future__ import annotations

SCHEMA = "risk"
