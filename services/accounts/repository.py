"""Every SQL statement of the accounts service (schema `accounts`)."""

from __future__ import annotations

SCHEMA = "accounts"
