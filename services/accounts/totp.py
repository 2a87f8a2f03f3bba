"""TOTP codes checked against a user's secret (encrypted at rest), each time step accepted once.

A code matches when it is the code of the current 30-second step or of one step either side (clock drift). The
matched step is then claimed atomically in `users.totp_last_step`: it must be newer than every step accepted before
for that user, so a code (or an older one) presented again is refused, for login, step-up and enrollment alike.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.accounts.repository import AccountsRepository, Row
from shared.clock import utc_now
from shared.crypto import KeyProvider, decrypt_secret
from shared.crypto.store import totp_row_id
from shared.db import UnitOfWork

TOTP_WINDOW = 1  # one 30-second step either side, for clock drift


@dataclass
class TotpVerifier:
    """Matches codes against the user's secret and spends the matched step."""

    keys: KeyProvider
    sessionmaker: async_sessionmaker[AsyncSession]
    # The time codes are checked against (tests step it forward instead of waiting 30 s).
    clock: Callable[[], datetime] = utc_now

    def _totp(self, user: Row) -> pyotp.TOTP:
        secret = decrypt_secret(self.keys, user["totp_secret"], totp_row_id(user["user_id"]))
        return pyotp.TOTP(secret.decode("ascii"))

    def matching_step(self, user: Row, code: str) -> int | None:
        """The time step (within the drift window) whose code is `code`, or None."""
        if user["totp_secret"] is None:
            return None
        totp, now = self._totp(user), self.clock()
        for offset in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
            moment = now + timedelta(seconds=offset * totp.interval)
            if hmac.compare_digest(totp.at(moment), code):
                return int(totp.timecode(moment))
        return None

    async def accept(self, user: Row, code: str, session: AsyncSession | None = None) -> bool:
        """True when `code` matches a step newer than every step accepted before; that step is then spent.

        The claim runs in `session`'s transaction when given, else in a unit of work of its own.
        """
        step = self.matching_step(user, code)
        if step is None:
            return False
        if session is not None:
            return await AccountsRepository(session).claim_totp_step(user["user_id"], step)
        async with UnitOfWork(self.sessionmaker) as uow:
            return await AccountsRepository(uow.session).claim_totp_step(user["user_id"], step)
