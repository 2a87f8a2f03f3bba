"""Signed audit anchors: Ed25519 commitments to `(chain, length, head_hash, anchored_at)` kept outside the log.

An anchor says "on `anchored_at`, chain `chain` had `length` entries and its newest entry hashed to `head_hash`".
It is signed with a dedicated anchor key (not the token key) over the RFC 8785 canonical JSON of its signed fields
(`signed_fields()`), stored in `anchors.audit_anchors` (another schema than the log) and published on
`audit.anchors.v1`. Anyone holding only the public key can then check that the log still extends every anchor:
a truncated chain is shorter than an anchor, a chain rewritten with recomputed hashes no longer reaches the
anchored head hash (see `shared.audit.anchor_verify`).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, model_validator
from sqlalchemy.dialects.postgresql import CHAR
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.audit.canonical import PlainJson, canonical_json, format_timestamp
from shared.auth.keys import key_fingerprint, load_private_key_file, load_public_key_file, write_key_pair
from shared.config import AetherSettings, ConfigurationError, Environment, env_name
from shared.contracts.audit import AuditAnchored
from shared.contracts.registry import new_envelope
from shared.events import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import AUDIT_ANCHORS

SCHEMA = "anchors"
ANCHOR_TYPE = "aether.audit.anchor.v1"
ANCHOR_KEY_DIR = "anchor"  # under the keys folder: <keys>/anchor/private.pem and public.pem

metadata = sa.MetaData(schema=SCHEMA)

audit_anchors = sa.Table(
    "audit_anchors",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("chain", sa.Text, nullable=False),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("head_hash", CHAR(64), nullable=False),
    sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("chain", "length", name="uq_audit_anchors_chain_length"),
)


class AnchorSettings(AetherSettings):
    """Anchoring cadence and the anchor key files (`AETHER_AUDIT_ANCHOR_*`)."""

    audit_anchor_every_entries: int = Field(default=100, ge=1, le=1_000_000)
    audit_anchor_every_s: float = Field(default=60.0, gt=0, le=86_400)
    audit_anchor_poll_s: float = Field(default=1.0, gt=0, le=3_600)
    audit_anchor_private_key_file: Path | None = None
    audit_anchor_public_key_file: Path | None = None

    @model_validator(mode="after")
    def _anchor_key_in_production(self) -> Self:
        if self.env is Environment.PRODUCTION and self.audit_anchor_private_key_file is None:
            raise ValueError(f"{env_name('audit_anchor_private_key_file')}: required in production (audit anchors)")
        return self


class InvalidAnchor(ValueError):
    """An anchor record that is not well formed (missing field, wrong type)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Anchor:
    """One signed commitment to the head of a chain."""

    chain: str
    length: int
    head_hash: str
    anchored_at: datetime
    key_id: str
    signature: str  # base64url Ed25519 signature over `signed_bytes()`

    def signed_fields(self) -> dict[str, PlainJson]:
        """What the signature covers: the type tag (domain separation), the commitment and the key id."""
        return {
            "type": ANCHOR_TYPE,
            "chain": self.chain,
            "length": self.length,
            "head_hash": self.head_hash,
            "anchored_at": format_timestamp(self.anchored_at),
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        """RFC 8785 canonical JSON of `signed_fields()`."""
        return canonical_json(self.signed_fields())

    def as_payload(self) -> dict[str, PlainJson]:
        """The event payload and REST body: the signed fields plus `signature`."""
        return {**self.signed_fields(), "signature": self.signature}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Anchor:
        """Parse `as_payload()` output (from Kafka or a file); raise InvalidAnchor when malformed."""
        try:
            if payload.get("type") != ANCHOR_TYPE:
                raise InvalidAnchor(f"type must be {ANCHOR_TYPE!r}")
            length = payload["length"]
            if not isinstance(length, int) or isinstance(length, bool):
                raise InvalidAnchor("length must be an integer")
            anchored_at = datetime.fromisoformat(str(payload["anchored_at"]))
            if anchored_at.tzinfo is None:
                raise InvalidAnchor("anchored_at must carry a timezone")
            return cls(
                chain=str(payload["chain"]),
                length=length,
                head_hash=str(payload["head_hash"]),
                anchored_at=anchored_at.astimezone(UTC),
                key_id=str(payload["key_id"]),
                signature=str(payload["signature"]),
            )
        except (KeyError, ValueError) as exc:
            if isinstance(exc, InvalidAnchor):
                raise
            raise InvalidAnchor(f"malformed anchor: {exc}") from exc


def sign_anchor(key: Ed25519PrivateKey, *, chain: str, length: int, head_hash: str, anchored_at: datetime) -> Anchor:
    """Build and sign an anchor with the anchor private key."""
    unsigned = Anchor(
        chain=chain,
        length=length,
        head_hash=head_hash,
        anchored_at=anchored_at.astimezone(UTC),
        key_id=key_fingerprint(key.public_key()),
        signature="",
    )
    signature = _b64url(key.sign(unsigned.signed_bytes()))
    return Anchor(**{**_fields(unsigned), "signature": signature})


def _fields(anchor: Anchor) -> dict[str, Any]:
    return {name: getattr(anchor, name) for name in Anchor.__slots__}


def anchor_signature_valid(public_key: Ed25519PublicKey, anchor: Anchor) -> bool:
    """True when `anchor` was signed by the private half of `public_key` and not altered since."""
    try:
        public_key.verify(_from_b64url(anchor.signature), anchor.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class AnchorPolicy:
    """Anchor a chain once `every_entries` entries, or `every_s` seconds with at least one entry, are unanchored."""

    every_entries: int
    every_s: float

    def due(self, *, length: int, last_length: int, last_at: datetime | None, now: datetime) -> bool:
        """Whether a chain of `length` entries, last anchored at `last_length` on `last_at`, needs an anchor now."""
        pending = length - last_length
        if pending <= 0:
            return False
        if pending >= self.every_entries or last_at is None:
            return True
        return (now - last_at).total_seconds() >= self.every_s


@dataclass(frozen=True, slots=True)
class AnchorSigner:
    """The anchoring job's private key."""

    key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_fingerprint(self.key.public_key())


def default_anchor_key_dir() -> Path:
    """`$AETHER_HOME/keys/anchor`, AETHER_HOME defaulting to the checkout's `.aether` (as `aether up` uses)."""
    home = os.environ.get("AETHER_HOME")
    base = Path(home) if home else Path(__file__).resolve().parents[2] / ".aether"
    return base / "keys" / ANCHOR_KEY_DIR


def ensure_anchor_key_pair(key_dir: Path) -> tuple[Path, Path]:
    """Create the anchor key pair in `key_dir` when missing; return (private, public) paths."""
    private_path, public_path = key_dir / "private.pem", key_dir / "public.pem"
    if not (private_path.exists() and public_path.exists()):
        write_key_pair(key_dir)
    return private_path, public_path


def load_signer(settings: AnchorSettings) -> AnchorSigner:
    """The anchor signer from `AETHER_AUDIT_ANCHOR_PRIVATE_KEY_FILE`; ConfigurationError when unusable."""
    path = settings.audit_anchor_private_key_file
    if path is None:
        raise ConfigurationError(f"{env_name('audit_anchor_private_key_file')}: required to sign audit anchors")
    try:
        return AnchorSigner(load_private_key_file(path))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{env_name('audit_anchor_private_key_file')}: {exc}") from None


def load_anchor_public_key(path: Path) -> Ed25519PublicKey:
    """The anchor public key (PEM file)."""
    return load_public_key_file(path)


# Chain heads ahead of their newest anchor, with that anchor's length and time.
_DUE_CANDIDATES = """
    SELECT h.chain, h.length, h.head_hash, a.length AS last_length, a.anchored_at AS last_at
    FROM audit.chain_heads h
    LEFT JOIN LATERAL (
        SELECT length, anchored_at FROM anchors.audit_anchors x
        WHERE x.chain = h.chain ORDER BY x.length DESC LIMIT 1
    ) a ON true
    WHERE h.length > COALESCE(a.length, 0) {only}
    ORDER BY h.chain
"""
_ALL_DUE = sa.text(_DUE_CANDIDATES.format(only=""))
_SOME_DUE = sa.text(_DUE_CANDIDATES.format(only="AND h.chain = ANY(:chains)"))


async def anchor_due_chains(
    session: AsyncSession,
    signer: AnchorSigner,
    tables: EventTables,
    policy: AnchorPolicy,
    *,
    chains: Sequence[str] | None = None,
    now: datetime | None = None,
    producer: str = "reports",
) -> list[Anchor]:
    """Sign, store and queue (outbox, `audit.anchors.v1`) an anchor for every chain that is due; never commits.

    Runs in the caller's transaction, so the anchor row and its event commit together. Replicas may run it
    concurrently: an anchor of a (chain, length) that another one stored first is skipped (unique key), and two
    anchors of the same chain at different lengths are both valid commitments.
    """
    moment = now if now is not None else datetime.now(UTC)
    query = _ALL_DUE if chains is None else _SOME_DUE.bindparams(chains=list(chains))
    anchors: list[Anchor] = []
    for row in (await session.execute(query)).all():
        last_length = 0 if row.last_length is None else int(row.last_length)
        if not policy.due(length=int(row.length), last_length=last_length, last_at=row.last_at, now=moment):
            continue
        anchor = sign_anchor(
            signer.key, chain=str(row.chain), length=int(row.length), head_hash=str(row.head_hash), anchored_at=moment
        )
        if await store_anchor(session, tables, anchor, producer=producer):
            anchors.append(anchor)
    return anchors


async def store_anchor(session: AsyncSession, tables: EventTables, anchor: Anchor, *, producer: str) -> bool:
    """Insert the anchor and queue its `AuditAnchored` event; False when that (chain, length) was anchored already."""
    inserted = await session.execute(
        pg_insert(audit_anchors)
        .values(
            chain=anchor.chain,
            length=anchor.length,
            head_hash=anchor.head_hash,
            anchored_at=anchor.anchored_at,
            key_id=anchor.key_id,
            signature=anchor.signature,
        )
        .on_conflict_do_nothing(index_elements=[audit_anchors.c.chain, audit_anchors.c.length])
        .returning(audit_anchors.c.id)
    )
    if inserted.scalar_one_or_none() is None:
        return False
    message = AuditAnchored.model_validate(anchor.as_payload())
    envelope = new_envelope(message, producer=producer, aggregate_id=anchor.chain)
    await add_to_outbox(session, tables, topic=AUDIT_ANCHORS, envelope=envelope, key=anchor.chain)
    return True


def _anchor_of(row: sa.Row[Any]) -> Anchor:
    return Anchor(
        chain=str(row.chain),
        length=int(row.length),
        head_hash=str(row.head_hash),
        anchored_at=row.anchored_at,
        key_id=str(row.key_id),
        signature=str(row.signature),
    )


async def load_anchors_from_table(
    connection: AsyncConnection | AsyncSession, *, chains: Sequence[str] | None = None
) -> list[Anchor]:
    """Every stored anchor (of `chains` when given), by chain and length."""
    query = sa.select(audit_anchors).order_by(audit_anchors.c.chain, audit_anchors.c.length)
    if chains is not None:
        query = query.where(audit_anchors.c.chain.in_(list(chains)))
    return [_anchor_of(row) for row in (await connection.execute(query)).all()]
