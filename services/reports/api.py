"""HTTP routes of the reports service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from fastapi import APIRouter

from shared.audit.api import router as audit_router
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router

router = APIRouter(responses=COMMON_RESPONSES)
router.include_router(info_router("reports"))
router.include_router(audit_router)
