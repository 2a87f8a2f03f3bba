"""Every SQL statement of the oms service (schema `oms`)."""

from __future__ import annotations

SCHEMA = "oms"
