"""Every SQL statement of the hitl service (schema `hitl`)."""

from __future__ import annotations

SCHEMA = "hitl"
