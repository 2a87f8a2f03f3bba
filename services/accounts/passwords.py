"""Password hashing (argon2id) and the strength rules; secrets submitted in logged fields are refused."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import string
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.accounts.errors import PasswordCheckBusy, SecretInLoggedField, WeakPassword

MIN_LENGTH = 12
MAX_LENGTH = 256
# A small list of passwords that pass the length rule yet are guessed first; lower-case comparison.
COMMON_PASSWORDS = frozenset(
    {
        "password1234",
        "password12345",
        "password123456",
        "123456789012",
        "1234567890123",
        "qwertyuiop123",
        "qwerty123456",
        "iloveyou1234",
        "letmein12345",
        "welcome12345",
        "administrator",
        "changeme1234",
        "trustno11234",
        "passw0rd1234",
        "p@ssw0rd1234",
        "aether123456",
        "bitcoin12345",
    }
)

_HASHER = PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
# Verified when the user does not exist, so an unknown user costs the same time as a wrong password.
DUMMY_HASH = _HASHER.hash("dummy-password-for-unknown-users")


def hash_password(password: str) -> str:
    """An argon2id hash (salted, parameters in the string)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; with `password_hash=None` verifies against a dummy hash and returns False."""
    try:
        matched = _HASHER.verify(password_hash or DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


class PasswordWorkers:
    """Argon2 off the event loop: `workers` threads of their own, at most `max_pending` checks admitted in all.

    A check past the bound is refused at once (503 `password_check_busy` with Retry-After) instead of queueing
    without end, so a flood of logins costs bounded CPU and memory. The threads run at a lower CPU priority
    (nice +10, inherited by argon2's lane threads), so the event loop thread wins the CPU and health reads stay
    fast while they hash.
    """

    def __init__(self, workers: int, max_pending: int) -> None:
        self.max_pending = max_pending
        self._pending = 0
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_lower_thread_priority
        )

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Hold one of the `max_pending` places (raise PasswordCheckBusy when none is free)."""
        if self._pending >= self.max_pending:
            raise PasswordCheckBusy(retry_after_s=1)
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1

    async def check(self, password_hash: str | None, password: str) -> bool:
        """`verify_password` on a worker thread, for a caller that holds a place (see `admitted`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, verify_password, password_hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Take a place and check (same dummy-hash rule for a missing user)."""
        with self.admitted():
            return await self.check(password_hash, password)

    def close(self) -> None:
        """Stop the threads once the checks in progress end."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_thread_priority() -> None:
    # Linux: nice applies per thread and threads started from this one (argon2's lanes) inherit it.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _character_classes(password: str) -> int:
    classes = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    return sum(classes)


def check_password_strength(password: str, username: str) -> None:
    """Raise WeakPassword naming the first rule `password` breaks."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"password: must be at least {MIN_LENGTH} characters", details={"rule": "min_length"})
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"password: must be at most {MAX_LENGTH} characters", details={"rule": "max_length"})
    if _character_classes(password) < 2:
        raise WeakPassword(
            "password: must mix at least two of lower case, upper case, digits and symbols",
            details={"rule": "character_classes"},
        )
    lowered = password.lower()
    if username and username.lower() in lowered:
        raise WeakPassword("password: must not contain the username", details={"rule": "contains_username"})
    if lowered in COMMON_PASSWORDS:
        raise WeakPassword("password: is in the list of common passwords", details={"rule": "common_password"})


# Shapes of credentials: long runs of base64/hex-like characters, PEM blocks, JWTs, known key prefixes.
_SECRET_PATTERNS = (
    re.compile(r"[A-Za-z0-9+/=_-]{32,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\."),
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}"),
)
_SECRET_ALPHABET = set(string.ascii_letters + string.digits + "+/=_-")


def secret_digest(value: str) -> str:
    """SHA-256 of a submitted secret: compared against logged fields, never reversible for a random secret."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def looks_like_secret(value: str) -> bool:
    """True when `value` has the shape of a credential (pattern match)."""
    return any(pattern.search(value) for pattern in _SECRET_PATTERNS)


def refuse_secret_in_field(field: str, value: str | None, known_digests: frozenset[str] = frozenset()) -> None:
    """Raise SecretInLoggedField when a logged field carries a secret (by shape, or equal to a submitted secret)."""
    if not value:
        return
    candidates = {value, value.strip(), *value.split()}
    if looks_like_secret(value) or any(secret_digest(candidate) in known_digests for candidate in candidates):
        raise SecretInLoggedField(
            f"{field}: looks like a secret; this field is logged, never put credentials in it",
            details={"field": field},
        )
