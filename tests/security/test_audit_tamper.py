"""S4: tampering with the audit log behind the triggers' back is detected, with its kind and place.

Part 1 (chain only): a superuser with triggers disabled (`session_replication_role = replica`) modifies, deletes,
reorders, truncates, inserts and modifies-then-re-hashes entries of fresh chains; `verify_chain` must name the
right kind and the first broken position every time.

Part 2 (anchors, the RELIABILITY.md S4 target): the same superuser, who may now also move `audit.chain_heads`,
modifies, deletes, reorders, truncates and rewrites-with-recomputed-hashes chains that the anchoring job anchored
every ANCHOR_EVERY entries; `verify_chain_with_anchors` with the anchor PUBLIC key only must detect 100 % per class.
Tampering confined to the entries after the newest anchor (the exposure window) is measured too: it goes
undetected, and the record says how large that window is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.audit import BreakKind, JsonValue, append, chain_hash, verify_chain
from shared.audit.anchor_verify import verify_chain_with_anchors
from shared.audit.anchors import AnchorPolicy, AnchorSigner, anchor_due_chains, load_anchors_from_table
from shared.audit.log import GENESIS_HASH, entry_of
from shared.auth.keys import generate_private_key, public_key_pem, write_key_pair
from shared.db import UnitOfWork, sessionmaker_for
from shared.events.tables import event_tables
from tests.conftest import libpq_url
from tests.reliability.conftest import RecordWriter

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT_PATH = REPO_ROOT / "reports" / "reliability" / "S4-audit-tamper-db.json"
SEED = int(os.environ.get("AETHER_TEST_SEED", "4242"))
TRIALS_PER_CLASS = int(os.environ.get("AETHER_AUDIT_TAMPER_TRIALS", "25"))
BUILDERS = 8

Superuser = psycopg.AsyncConnection[TupleRow]


@dataclass(frozen=True)
class Expected:
    kind: BreakKind
    position: int


Tamper = Callable[[Superuser, random.Random, str, int], Awaitable[Expected]]


@pytest.fixture
async def superuser(superuser_url: str) -> AsyncIterator[Superuser]:
    connection = await psycopg.AsyncConnection.connect(libpq_url(superuser_url), autocommit=True)
    # Replica mode skips ordinary triggers for this session: the append-only guards no longer fire.
    await connection.execute("SET session_replication_role = replica")
    try:
        yield connection
    finally:
        await connection.close()


def random_details(rng: random.Random) -> dict[str, JsonValue]:
    return {
        "order_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "quantity": Decimal(rng.randint(1, 10_000)) / 100,
        "side": rng.choice(["buy", "sell"]),
        "reason": rng.choice(["operator request", "risk limit", "kill switch", "approval"]),
    }


async def build_chain(sessionmaker: async_sessionmaker[AsyncSession], rng: random.Random, chain: str) -> int:
    length = rng.randint(6, 24)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10_000_000))
    entries = [(random_details(rng), start + timedelta(microseconds=rng.randint(1, 10**9))) for _ in range(length)]
    async with UnitOfWork(sessionmaker) as uow:
        for details, occurred_at in entries:
            await append(
                uow.session, actor="operator-1", action="order.submit", target="order",
                details=details, chain=chain, occurred_at=occurred_at,
            )  # fmt: skip
    return length


async def modify(superuser: Superuser, rng: random.Random, chain: str, length: int) -> Expected:
    position = rng.randint(1, length)
    change = rng.choice(
        [
            "details = details || jsonb_build_object('quantity', '999999')",
            "details = details - 'reason'",
            "actor = 'mallory'",
            "target = target || '-forged'",
            "occurred_at = occurred_at + interval '1 microsecond'",
            "correlation_id = 'forged'",
        ]
    )
    await superuser.execute(
        f"UPDATE audit.audit_log SET {change} WHERE chain = %s AND position = %s",  # noqa: S608 - fixed fragments
        (chain, position),
    )
    return Expected(BreakKind.MODIFIED, position)


async def delete_middle(superuser: Superuser, rng: random.Random, chain: str, length: int) -> Expected:
    position = rng.randint(2, length - 1)
    await superuser.execute("DELETE FROM audit.audit_log WHERE chain = %s AND position = %s", (chain, position))
    return Expected(BreakKind.DELETED, position)


async def reorder(superuser: Superuser, rng: random.Random, chain: str, length: int) -> Expected:
    first, second = sorted(rng.sample(range(1, length + 1), 2))
    parked = length + 1_000  # (chain, position) is unique: park one entry while the other moves
    for source, destination in ((first, parked), (second, first), (parked, second)):
        await superuser.execute(
            "UPDATE audit.audit_log SET position = %s WHERE chain = %s AND position = %s", (destination, chain, source)
        )
    return Expected(BreakKind.REORDERED, first)


async def truncate_tail(superuser: Superuser, rng: random.Random, chain: str, length: int) -> Expected:
    kept = rng.randint(0, length - 1)
    # audit.chain_heads is left as it was: only the tail of the log goes.
    await superuser.execute("DELETE FROM audit.audit_log WHERE chain = %s AND position > %s", (chain, kept))
    return Expected(BreakKind.TRUNCATED, kept + 1)


async def stored_entry(superuser: Superuser, chain: str, position: int) -> tuple[object, ...]:
    cursor = await superuser.execute(
        "SELECT occurred_at, actor, action, target, details, correlation_id, prev_hash, hash"
        " FROM audit.audit_log WHERE chain = %s AND position = %s",
        (chain, position),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


def forged_hash(chain: str, position: int, occurred_at: datetime, details: dict[str, JsonValue], prev_hash: str) -> str:
    entry = entry_of(
        chain=chain, position=position, occurred_at=occurred_at, actor="mallory", action="order.submit",
        target="order", details=details, correlation_id=None,
    )  # fmt: skip
    return chain_hash(prev_hash, entry)


async def insert(superuser: Superuser, rng: random.Random, chain: str, length: int) -> Expected:
    # A self-consistent forged entry, linked to its predecessor; later entries shift up; the head is untouched.
    position = rng.randint(2, length + 1)
    previous = await stored_entry(superuser, chain, position - 1)
    prev_hash = str(previous[7])
    for shift in (100_000, -99_999):  # two steps keep (chain, position) unique at every row
        await superuser.execute(
            "UPDATE audit.audit_log SET position = position + %s WHERE chain = %s AND position >= %s",
            (shift, chain, position if shift > 0 else position + 100_000),
        )
    occurred_at = datetime.now(UTC)
    details: dict[str, JsonValue] = {"order_id": uuid.UUID(int=rng.getrandbits(128)).hex, "quantity": "999999"}
    await superuser.execute(
        "INSERT INTO audit.audit_log (chain, position, occurred_at, actor, action, target, details, prev_hash, hash)"
        " VALUES (%s, %s, %s, 'mallory', 'order.submit', 'order', %s, %s, %s)",
        (
            chain,
            position,
            occurred_at,
            Jsonb(details),
            prev_hash,
            forged_hash(chain, position, occurred_at, details, prev_hash),
        ),
    )
    return Expected(BreakKind.INSERTED, position)


async def modify_and_rehash(superuser: Superuser, rng: random.Random, chain: str, length: int) -> Expected:
    # The entry is rewritten with a correct hash of its new content; what follows (or the head) still disagrees.
    position = rng.randint(1, length)
    occurred_at, _actor, _action, _target, details, _cid, prev_hash, _hash = await stored_entry(
        superuser, chain, position
    )
    assert isinstance(details, dict)
    assert isinstance(occurred_at, datetime)
    forged = {**details, "quantity": "999999"}
    digest = forged_hash(chain, position, occurred_at, forged, str(prev_hash))
    await superuser.execute(
        "UPDATE audit.audit_log SET actor = 'mallory', correlation_id = NULL, details = %s, hash = %s"
        " WHERE chain = %s AND position = %s",
        (Jsonb(forged), digest, chain, position),
    )
    return Expected(BreakKind.MODIFIED, position)


TAMPERS: dict[str, Tamper] = {
    "modified": modify,
    "deleted": delete_middle,
    "reordered": reorder,
    "truncated": truncate_tail,
    "inserted": insert,
    "modified_and_rehashed": modify_and_rehash,
}


async def run_class(
    engine: AsyncEngine, superuser: Superuser, rng: random.Random, tamper: Tamper
) -> tuple[dict[str, int], list[str]]:
    sessionmaker = sessionmaker_for(engine)
    chains = [f"t-{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(TRIALS_PER_CLASS)]
    seeds = [rng.getrandbits(64) for _ in chains]
    gate = asyncio.Semaphore(BUILDERS)

    async def build(chain: str, seed: int) -> int:
        async with gate:
            return await build_chain(sessionmaker, random.Random(seed), chain)

    lengths = await asyncio.gather(*(build(chain, seed) for chain, seed in zip(chains, seeds, strict=True)))
    tally = {"trials": 0, "detected": 0, "exact": 0}
    misses: list[str] = []
    async with engine.connect() as connection:
        for chain, length in zip(chains, lengths, strict=True):
            before = await verify_chain(connection, chain)
            assert before.ok, before.first_break
            await connection.rollback()  # a fresh snapshot after the tampering below
            expected = await tamper(superuser, rng, chain, length)
            report = await verify_chain(connection, chain)
            await connection.rollback()
            found = report.first_break
            tally["trials"] += 1
            tally["detected"] += int(not report.ok)
            if found is not None and (found.kind, found.position) == (expected.kind, expected.position):
                tally["exact"] += 1
            else:
                misses.append(f"{chain} (length {length}): expected {expected}, got {found}")
    return tally, misses


async def test_tampering_is_detected_with_kind_and_position(engine: AsyncEngine, superuser: Superuser) -> None:
    rng = random.Random(SEED)
    started = time.perf_counter()
    detected_by_class: dict[str, dict[str, int]] = {}
    misses: list[str] = []
    for name, tamper in TAMPERS.items():
        detected_by_class[name], class_misses = await run_class(engine, superuser, rng, tamper)
        misses += class_misses

    cases = sum(tally["trials"] for tally in detected_by_class.values())
    record = {
        "id": "S4-audit-tamper-db",
        "seed": SEED,
        "cases": cases,
        "violations": len(misses),
        "trials_per_class": TRIALS_PER_CLASS,
        "detected_by_class": detected_by_class,
        "detection_rate": sum(t["detected"] for t in detected_by_class.values()) / cases,
        "duration_s": round(time.perf_counter() - started, 3),
        "not_covered": "rewrite with recomputed hashes and a moved chain head: see the anchored record S4",
    }
    REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
    REPORT_PATH.write_text(json.dumps(record, indent=2) + "\n")

    assert cases == TRIALS_PER_CLASS * len(TAMPERS)
    assert misses == []


async def test_cli_exits_one_and_names_the_broken_position(
    database_url: str, engine: AsyncEngine, superuser: Superuser
) -> None:
    chain = f"t-{uuid.uuid4().hex}"
    rng = random.Random(SEED)
    await build_chain(sessionmaker_for(engine), rng, chain)
    await superuser.execute(
        'UPDATE audit.audit_log SET details = details || \'{"quantity": "0"}\' WHERE chain = %s AND position = 3',
        (chain,),
    )

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.audit.cli", "verify", "--database-url", database_url, "--chain", chain, "--json",
        cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 1, stderr.decode()
    document = json.loads(stdout)
    assert document["ok"] is False
    [report] = document["chains"]
    assert (report["chain"], report["ok"]) == (chain, False)
    assert (report["first_break"]["kind"], report["first_break"]["position"]) == ("modified", 3)
    assert report["checked_rows"] == 2


# ---------------------------------------------------------------------------------------------------------------
# Part 2: verified with the anchor public key and the anchors only.

ANCHOR_TRIALS_PER_CLASS = int(os.environ.get("AETHER_AUDIT_ANCHOR_TRIALS", "200"))
ANCHOR_EVERY = 5  # the anchoring policy of these chains: an anchor once 5 entries are unanchored
ANCHOR_KEY = generate_private_key()
ANCHOR_PUBLIC_KEY = ANCHOR_KEY.public_key()  # all the verifier gets
REPORTS_TABLES = event_tables("reports")


@dataclass(frozen=True)
class AnchoredChain:
    chain: str
    length: int
    anchored: tuple[int, ...]  # the anchored lengths

    @property
    def last_anchor(self) -> int:
        return self.anchored[-1]


AnchoredTamper = Callable[[Superuser, random.Random, AnchoredChain], Awaitable[Expected]]


async def build_anchored_chain(
    sessionmaker: async_sessionmaker[AsyncSession], rng: random.Random, chain: str
) -> AnchoredChain:
    """Append 8..22 entries, running the real anchoring step as they go (policy: every ANCHOR_EVERY entries)."""
    length = rng.randint(8, 22)
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10_000_000))
    policy = AnchorPolicy(every_entries=ANCHOR_EVERY, every_s=86_400)
    signer = AnchorSigner(ANCHOR_KEY)
    anchored: list[int] = []
    async with UnitOfWork(sessionmaker) as uow:
        for index in range(length):
            await append(
                uow.session, actor="operator-1", action="order.submit", target="order", details=random_details(rng),
                chain=chain, occurred_at=start + timedelta(seconds=index, microseconds=rng.randint(0, 999_999)),
            )  # fmt: skip
            # The job's step where the policy can be due (at once, then per ANCHOR_EVERY entries): the same anchors
            # as running it after every append, for a quarter of the queries.
            if not anchored or index + 1 - anchored[-1] >= ANCHOR_EVERY:
                made = await anchor_due_chains(uow.session, signer, REPORTS_TABLES, policy, chains=[chain], now=start)
                assert [anchor.length for anchor in made] == [index + 1]
                anchored.append(index + 1)
    return AnchoredChain(chain, length, tuple(anchored))


async def move_head(superuser: Superuser, chain: str, length: int, head_hash: str) -> None:
    await superuser.execute(
        "UPDATE audit.chain_heads SET length = %s, head_hash = %s WHERE chain = %s", (length, head_hash, chain)
    )


async def hash_at(superuser: Superuser, chain: str, position: int) -> str:
    if position == 0:
        return GENESIS_HASH
    return str((await stored_entry(superuser, chain, position))[7])


async def anchored_modify(superuser: Superuser, rng: random.Random, target: AnchoredChain) -> Expected:
    return await modify(superuser, rng, target.chain, target.length)


async def anchored_delete(superuser: Superuser, rng: random.Random, target: AnchoredChain) -> Expected:
    position = rng.randint(1, target.length - 1)
    await superuser.execute("DELETE FROM audit.audit_log WHERE chain = %s AND position = %s", (target.chain, position))
    return Expected(BreakKind.DELETED, position)


async def anchored_reorder(superuser: Superuser, rng: random.Random, target: AnchoredChain) -> Expected:
    return await reorder(superuser, rng, target.chain, target.length)


async def anchored_truncate(superuser: Superuser, rng: random.Random, target: AnchoredChain) -> Expected:
    # Cut into the anchored part and move the head back to match: the chain alone verifies again.
    kept = rng.randint(0, target.last_anchor - 1)
    await superuser.execute("DELETE FROM audit.audit_log WHERE chain = %s AND position > %s", (target.chain, kept))
    await move_head(superuser, target.chain, kept, await hash_at(superuser, target.chain, kept))
    return Expected(BreakKind.TRUNCATED, kept + 1)


async def rewrite_from(superuser: Superuser, rng: random.Random, chain: str, start: int, length: int) -> None:
    """Forge entry `start`, re-hash it and every later entry, and move the head: a self-consistent chain."""
    cursor = await superuser.execute(
        "SELECT position, occurred_at, action, target, details, correlation_id FROM audit.audit_log"
        " WHERE chain = %s AND position >= %s ORDER BY position",
        (chain, start),
    )
    prev_hash = await hash_at(superuser, chain, start - 1)
    for position, occurred_at, action, target, details, correlation_id in await cursor.fetchall():
        actor = "operator-1"
        if position == start:
            details = {**details, "quantity": str(rng.randint(100_000, 999_999)), "side": "sell"}
            actor = "mallory"
        entry = entry_of(
            chain=chain, position=position, occurred_at=occurred_at, actor=actor, action=action, target=target,
            details=details, correlation_id=correlation_id,
        )  # fmt: skip
        digest = chain_hash(prev_hash, entry)
        await superuser.execute(
            "UPDATE audit.audit_log SET actor = %s, details = %s, prev_hash = %s, hash = %s"
            " WHERE chain = %s AND position = %s",
            (actor, Jsonb(details), prev_hash, digest, chain, position),
        )
        prev_hash = digest
    await move_head(superuser, chain, length, prev_hash)


async def anchored_rewrite(superuser: Superuser, rng: random.Random, target: AnchoredChain) -> Expected:
    start = rng.randint(1, target.last_anchor)
    await rewrite_from(superuser, rng, target.chain, start, target.length)
    first_anchor_covering = min(length for length in target.anchored if length >= start)
    return Expected(BreakKind.REWRITTEN, first_anchor_covering)


ANCHORED_TAMPERS: dict[str, AnchoredTamper] = {
    "modify": anchored_modify,
    "delete": anchored_delete,
    "reorder": anchored_reorder,
    "truncate": anchored_truncate,
    "rewrite_recomputed_hashes": anchored_rewrite,
}


async def build_anchored_chains(engine: AsyncEngine, rng: random.Random, count: int) -> list[AnchoredChain]:
    sessionmaker = sessionmaker_for(engine)
    chains = [f"a-{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(count)]
    seeds = [rng.getrandbits(64) for _ in chains]
    gate = asyncio.Semaphore(BUILDERS)

    async def build(chain: str, seed: int) -> AnchoredChain:
        async with gate:
            return await build_anchored_chain(sessionmaker, random.Random(seed), chain)

    return list(await asyncio.gather(*(build(chain, seed) for chain, seed in zip(chains, seeds, strict=True))))


async def verify_anchored(engine: AsyncEngine, chain: str) -> tuple[bool, tuple[BreakKind, int] | None]:
    async with engine.connect() as connection:
        anchors = await load_anchors_from_table(connection, chains=[chain])
        report = await verify_chain_with_anchors(connection, chain, anchors, ANCHOR_PUBLIC_KEY)
    broken = report.first_break
    return report.ok, None if broken is None else (broken.kind, broken.position)


async def run_anchored_class(
    engine: AsyncEngine, superuser: Superuser, rng: random.Random, tamper: AnchoredTamper
) -> tuple[dict[str, int], list[str]]:
    targets = await build_anchored_chains(engine, rng, ANCHOR_TRIALS_PER_CLASS)
    tally = {"trials": 0, "detected": 0, "exact": 0}
    misses: list[str] = []
    for index, target in enumerate(targets):
        if index % 5 == 0:  # a sample is verified intact first (every chain is built the same way)
            ok, _ = await verify_anchored(engine, target.chain)
            assert ok, target
        expected = await tamper(superuser, rng, target)
        ok, found = await verify_anchored(engine, target.chain)
        tally["trials"] += 1
        tally["detected"] += int(not ok)
        if found == (expected.kind, expected.position):
            tally["exact"] += 1
        else:
            misses.append(f"{target}: expected {expected}, got {found}")
    return tally, misses


async def measure_exposure_window(
    engine: AsyncEngine, superuser: Superuser, rng: random.Random, count: int
) -> dict[str, int]:
    """Truncate only entries appended after the newest anchor (head moved back): the anchors cannot see it."""
    targets = [t for t in await build_anchored_chains(engine, rng, count) if t.length > t.last_anchor]
    undetected = 0
    largest = 0
    for target in targets:
        kept = rng.randint(target.last_anchor, target.length - 1)
        await superuser.execute("DELETE FROM audit.audit_log WHERE chain = %s AND position > %s", (target.chain, kept))
        await move_head(superuser, target.chain, kept, await hash_at(superuser, target.chain, kept))
        ok, _ = await verify_anchored(engine, target.chain)
        undetected += int(ok)
        largest = max(largest, target.length - kept)
    return {"trials": len(targets), "undetected": undetected, "largest_undetected_cut": largest}


async def test_anchored_tampering_is_detected_with_the_public_key_only(
    engine: AsyncEngine, superuser: Superuser, write_reliability_record: RecordWriter
) -> None:
    rng = random.Random(SEED + 4)
    started = time.perf_counter()
    by_class: dict[str, dict[str, int]] = {}
    misses: list[str] = []
    for name, tamper in ANCHORED_TAMPERS.items():
        by_class[name], class_misses = await run_anchored_class(engine, superuser, rng, tamper)
        misses += class_misses
    window = await measure_exposure_window(engine, superuser, rng, 40)

    cases = sum(tally["trials"] for tally in by_class.values())
    detected = sum(tally["detected"] for tally in by_class.values())
    write_reliability_record(
        {
            "id": "S4",
            "seed": SEED,
            "cases": cases,
            "violations": cases - detected,
            "trials_per_class": ANCHOR_TRIALS_PER_CLASS,
            "detected_by_class": by_class,
            "detection_rate_by_class": {name: t["detected"] / t["trials"] for name, t in by_class.items()},
            "exact_kind_and_position": sum(tally["exact"] for tally in by_class.values()),
            "verified_with": "anchor public key + anchors table only",
            "anchor_every_entries": ANCHOR_EVERY,
            "exposure_window": {
                "definition": "entries appended after the newest anchor: at most anchor_every_entries - 1 entries "
                "or audit_anchor_every_s (+ one poll) seconds of appends; truncating or rewriting only those "
                "is not detected by the anchors",
                "max_unanchored_entries": ANCHOR_EVERY - 1,
                "tail_truncation_trials": window["trials"],
                "tail_truncations_undetected": window["undetected"],
                "largest_undetected_cut": window["largest_undetected_cut"],
            },
            "duration_s": round(time.perf_counter() - started, 3),
        }
    )

    assert cases == ANCHOR_TRIALS_PER_CLASS * len(ANCHORED_TAMPERS)
    assert misses == [], misses[:5]
    assert all(tally["detected"] == tally["trials"] for tally in by_class.values())
    # The window is real and bounded: a cut inside it passes, and it is never larger than the policy allows.
    assert window["trials"] > 0
    assert window["undetected"] == window["trials"]
    assert window["largest_undetected_cut"] <= ANCHOR_EVERY - 1


async def test_cli_with_anchors_names_a_rewrite_and_a_forged_anchor(
    database_url: str, engine: AsyncEngine, superuser: Superuser, tmp_path: Path
) -> None:
    rng = random.Random(SEED + 5)
    [target] = await build_anchored_chains(engine, rng, 1)
    key_files = write_key_pair(tmp_path / "anchor", key=ANCHOR_KEY)
    assert key_files.public_path.read_bytes() == public_key_pem(ANCHOR_PUBLIC_KEY)
    key_files.private_path.unlink()  # the verifier gets the public key only

    async def cli() -> tuple[int | None, dict[str, object]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.audit.cli", "verify", "--database-url", database_url, "--chain",
            target.chain, "--anchors", "--public-key", str(key_files.public_path), "--json",
            cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert stdout, stderr.decode()
        return process.returncode, json.loads(stdout)

    code, document = await cli()
    assert (code, document["ok"]) == (0, True), document

    await rewrite_from(superuser, rng, target.chain, 2, target.length)
    code, document = await cli()
    assert (code, document["ok"]) == (1, False)
    [report] = document["chains"]  # type: ignore[misc]
    first_anchor_covering = min(length for length in target.anchored if length >= 2)
    assert report["first_break"]["kind"] == "rewritten"  # type: ignore[index]
    assert report["first_break"]["position"] == first_anchor_covering  # type: ignore[index]

    # A forged anchor (signed by another key) is named as such, before anything else.
    forged_key = generate_private_key()
    await superuser.execute(
        "UPDATE anchors.audit_anchors SET signature = %s WHERE chain = %s AND length = %s",
        (
            base64.urlsafe_b64encode(forged_key.sign(b"x")).rstrip(b"=").decode(),
            target.chain,
            target.anchored[0],
        ),
    )
    code, document = await cli()
    [report] = document["chains"]  # type: ignore[misc]
    assert code == 1
    assert report["first_break"]["kind"] == "anchor_invalid"  # type: ignore[index]
    assert report["first_break"]["position"] == target.anchored[0]  # type: ignore[index]
