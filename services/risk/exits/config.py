"""Settings of the exit brackets; RiskSettings inherits them (AETHER_ prefix like every setting)."""

from __future__ import annotations

from pydantic import BaseModel


class ExitSettings(BaseModel):
    """Fields the exit engine reads; the risk service's settings class mixes this in."""
