"""Every SQL statement of the reports service (schema `reports`)."""

from __future__ import annotations

SCHEMA = "reports"
