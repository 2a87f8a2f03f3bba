"""HTTP routes of the exit brackets (`/risk/exits`)."""

from __future__ import annotations

from fastapi import APIRouter

from shared.errors import COMMON_RESPONSES

router = APIRouter(responses=COMMON_RESPONSES)
