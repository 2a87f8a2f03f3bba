"""HTTP routes of the risk service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from fastapi import APIRouter

from services.risk.exits.api import router as exits_router
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("risk"))
router.include_router(exits_router)
