"""Request and response models of the hitl service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations
