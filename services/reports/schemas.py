"""Request and response models of the reports service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations
