"""Request and response models of the accounts service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations
