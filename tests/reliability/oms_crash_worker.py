"""The OMS process that R2 SIGKILLs, and the pieces R2 and R5 share: building an OMS on the paper venue and
comparing the OMS database with the paper venue's own books.

`python -m tests.reliability.oms_crash_worker` is a fork server: it imports the OMS once (about 2 s on a
2-core machine), then reads one JSON run spec per line on stdin and forks one OMS process per run. Each child
builds an OrderService on a PaperVenue against the database of the spec, places the spec's orders one by one,
appends every order whose `place()` returned to the acknowledgement file (write + fsync), and dies by SIGKILL:
either by its own hand at the spec's crash point, on the spec's n-th order, or from the test (`external`).
Events go out as JSON lines on the server's stdout (`forked`, `ready`, `placed_all`, `exited`); logs go to stderr.

The crash points are test wrappers around production objects, not hooks in them:
- `before_commit`: the OMS session's `commit` of the order transaction (every statement already ran);
- `before_send`: the venue wrapper's `submit`, before the paper venue is called;
- `after_send`: the paper venue committed the order (and its fills) but the OMS heard nothing: the first
  listener callback, or the wrapper's `submit` after the inner call returned, whichever comes first;
- `after_apply`: `send` returned, so the venue's answer is applied, but `place()` has not returned (no ack).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, TextIO

import sqlalchemy as sa
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from services.oms.config import InstrumentConfig, OmsSettings
from services.oms.errors import OrderDenied
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from shared.config import Environment
from shared.db import create_engine, sessionmaker_for
from shared.domain.book import OrderBook
from shared.domain.fees import AccountFeeSchedules
from shared.domain.types import AccountId, ClientOrderId, OrderId, Symbol
from shared.events.tables import event_tables
from shared.marketdata import BookSnapshot, Level
from shared.observability.logging import configure_logging
from shared.venues.base import (
    UpdateListener,
    VenueAdapter,
    VenueBalance,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueUpdate,
)
from shared.venues.paper import PaperVenue
from shared.venues.paper_feed import book_json, book_key
from tests.helpers import own_database  # noqa: F401 - re-exported for the reliability tests
from tests.kit.controls import seed_defaults

ACTOR = "test:oms-reliability"
QUOTE = "USD"
RULES = InstrumentConfig(
    price_increment=Decimal("0.1"),
    quantity_increment=Decimal("0.00000001"),
    min_quantity=Decimal("0.0001"),
    base_step=Decimal("1e-10"),
    quote_step=Decimal("0.0001"),
)
# The one market every OMS incarnation sees at start (deep, so that small orders never exhaust it).
BEST_BID = Decimal("99.9")
BEST_ASK = Decimal("100.0")
LEVEL_STEP = Decimal("0.5")
LEVELS = 8
LEVEL_QTY = Decimal("50")


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- building an OMS on the paper venue ---------------------------------------------------------------------


def oms_settings(database_url: str, redis_url: str, symbols: Sequence[str], pool_size: int = 4) -> OmsSettings:
    """OMS settings for the reliability tests: the given instruments (BTC/USD's rules), quiet logs."""
    return OmsSettings(
        env=Environment.TEST,
        database_url=SecretStr(database_url),
        redis_url=SecretStr(redis_url),
        database_pool_size=pool_size,
        log_level="WARNING",
        instruments=dict.fromkeys(symbols, RULES),
        market_data_max_age_s=3_600.0,  # a book published once per scenario
    )


def book_levels() -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    bids = [(BEST_BID - LEVEL_STEP * i, LEVEL_QTY) for i in range(LEVELS)]
    asks = [(BEST_ASK + LEVEL_STEP * i, LEVEL_QTY) for i in range(LEVELS)]
    return bids, asks


def book_snapshot(symbol: str) -> BookSnapshot:
    bids, asks = book_levels()
    return BookSnapshot(
        venue="test",
        symbol=symbol,
        bids=[Level(price=p, qty=q) for p, q in bids],
        asks=[Level(price=p, qty=q) for p, q in asks],
        timestamp=utc_now(),
        sequence=1,
    )


async def publish_book(redis: Redis, symbols: Sequence[str]) -> None:
    """The latest book in Redis, where the OMS sizes market buys (what the paper feed writes)."""
    bids, asks = book_levels()
    for symbol in symbols:
        book = OrderBook(symbol)
        book.apply_snapshot(bids, asks, datetime.now(UTC))
        await redis.set(book_key(symbol), book_json(book))  # exactly what the paper feed writes


@dataclass
class OmsProcess:
    """One incarnation of the OMS: its engines, the paper venue it hosts, the order service."""

    service: OrderService
    venue: PaperVenue
    oms_engine: AsyncEngine
    venue_engine: AsyncEngine
    redis: Redis

    async def close(self) -> None:
        await self.redis.aclose()
        await self.oms_engine.dispose()
        await self.venue_engine.dispose()


ServiceFactory = Callable[..., OrderService]


async def start_venue(settings: OmsSettings) -> tuple[PaperVenue, AsyncEngine]:
    """A paper venue on its own engine (as app.py builds it), restored from its tables and fed the market."""
    venue_engine = create_engine(settings, application_name="reliability-paper-venue")
    venue = PaperVenue(
        sessionmaker_for(venue_engine),
        instruments={Symbol(symbol): rules.spec(symbol) for symbol, rules in settings.instruments.items()},
        fee_schedules=AccountFeeSchedules(),
        clock=utc_now,
    )
    await venue.restore()
    for symbol in settings.instruments:
        await venue.on_book_snapshot(book_snapshot(symbol))
    return venue, venue_engine


async def start_oms(
    settings: OmsSettings,
    *,
    session_class: type[AsyncSession] = AsyncSession,
    wrap_venue: Callable[[PaperVenue], VenueAdapter] | None = None,
    wrap_listener: Callable[[UpdateListener], UpdateListener] | None = None,
    service_class: ServiceFactory = OrderService,
) -> OmsProcess:
    """What the OMS does at start, minus the HTTP app: the paper venue restored, its market fed, the service wired."""
    venue, venue_engine = await start_venue(settings)
    oms_engine = create_engine(settings, application_name="reliability-oms")
    # What the risk and approval services publish at their first start, written into the OMS's copy (this
    # OMS runs without its Kafka workers).
    await seed_defaults(oms_engine)
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    service = service_class(
        settings=settings,
        sessionmaker=async_sessionmaker(oms_engine, expire_on_commit=False, autoflush=False, class_=session_class),
        tables=event_tables("oms"),
        venue=venue if wrap_venue is None else wrap_venue(venue),
        redis=redis,
        clock=utc_now,
    )
    listener: UpdateListener = service.apply_update
    venue.subscribe(listener if wrap_listener is None else wrap_listener(listener))
    return OmsProcess(service, venue, oms_engine, venue_engine, redis)


# --- comparing the OMS database with the venue's books -----------------------------------------------------

OPEN = {"accepted", "partially_filled", "pending_cancel"}
NEVER_AT_VENUE = {"denied", "pending_approval"}
# OMS terminal status -> the venue status it stands for.
TERMINAL_AT_VENUE = {"filled": "filled", "canceled": "canceled", "expired": "expired"}


@dataclass
class Divergences:
    """Every way the OMS database and the paper venue's books disagree, for some accounts."""

    missing_at_venue: list[str] = field(default_factory=list)  # OMS accepted-or-later, venue never saw it
    duplicate_venue_orders: int = 0  # venue orders beyond one per (account, client order id)
    duplicate_oms_orders: int = 0
    orphans_at_venue: list[str] = field(default_factory=list)  # venue open, OMS unknown or closed
    orphans_in_oms: list[str] = field(default_factory=list)  # OMS open, venue unknown or closed
    unresolved: list[str] = field(default_factory=list)  # OMS still SUBMITTED
    status_mismatches: list[str] = field(default_factory=list)  # closed differently, or filled quantity differs
    missing_fills: list[str] = field(default_factory=list)  # venue fills of OMS orders absent from oms.fills
    extra_fills: list[str] = field(default_factory=list)  # oms.fills rows the venue does not have
    unrecorded_fills: list[str] = field(default_factory=list)  # venue fills of orders the OMS has no row for
    balance_mismatches: list[str] = field(default_factory=list)  # ledger total != venue total
    reservation_leaks: list[str] = field(default_factory=list)  # reservations of closed orders, reserved != sum
    position_mismatches: list[str] = field(default_factory=list)  # position != net of the fills
    canceled_unknown_to_venue: list[str] = field(default_factory=list)  # OMS closed an order the venue never saw

    @property
    def orphans(self) -> int:
        return len(self.orphans_at_venue) + len(self.orphans_in_oms)

    @property
    def total(self) -> int:
        """All disagreements; `canceled_unknown_to_venue` and `unrecorded_fills` are outcomes, not counted."""
        return (
            len(self.missing_at_venue)
            + self.duplicate_venue_orders
            + self.duplicate_oms_orders
            + self.orphans
            + len(self.unresolved)
            + len(self.status_mismatches)
            + len(self.missing_fills)
            + len(self.extra_fills)
            + len(self.balance_mismatches)
            + len(self.reservation_leaks)
            + len(self.position_mismatches)
        )

    def summary(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if value}


async def _rows(conn: AsyncConnection, sql: str, accounts: list[str]) -> list[sa.Row[Any]]:
    return list((await conn.execute(sa.text(sql), {"accounts": accounts})).all())


async def divergences(engine: AsyncEngine, account_ids: Sequence[str]) -> Divergences:
    """Compare oms.* with paper.* for these accounts (read in one snapshot)."""
    accounts = sorted(set(account_ids))
    async with engine.connect() as conn:
        await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        oms_orders = await _rows(
            conn,
            "SELECT order_id, account_id, client_order_id, status, filled_quantity, reason FROM oms.orders"
            " WHERE account_id = ANY(:accounts)",
            accounts,
        )
        venue_orders = await _rows(
            conn,
            "SELECT account_id, client_order_id, status, filled_quantity FROM paper.orders"
            " WHERE account_id = ANY(:accounts)",
            accounts,
        )
        oms_fills = await _rows(
            conn,
            "SELECT f.trade_id, o.account_id, o.client_order_id FROM oms.fills f JOIN oms.orders o USING (order_id)"
            " WHERE f.account_id = ANY(:accounts)",
            accounts,
        )
        venue_fills = await _rows(
            conn,
            "SELECT trade_id, account_id, client_order_id FROM paper.fills WHERE account_id = ANY(:accounts)",
            accounts,
        )
        oms_balances = await _rows(
            conn,
            "SELECT account_id, asset, total, reserved FROM oms.balances WHERE account_id = ANY(:accounts)",
            accounts,
        )
        venue_balances = await _rows(
            conn, "SELECT account_id, asset, total FROM paper.balances WHERE account_id = ANY(:accounts)", accounts
        )
        reservations = await _rows(
            conn,
            "SELECT r.order_id, r.account_id, r.asset, r.remaining, o.status FROM oms.reservations r"
            " LEFT JOIN oms.orders o USING (order_id) WHERE r.account_id = ANY(:accounts)",
            accounts,
        )
        positions = await _rows(
            conn, "SELECT account_id, symbol, quantity FROM oms.positions WHERE account_id = ANY(:accounts)", accounts
        )
        net_fills = await _rows(
            conn,
            "SELECT account_id, symbol, SUM(CASE WHEN side = 'buy' THEN quantity ELSE -quantity END) AS net FROM oms.fills"
            " WHERE account_id = ANY(:accounts) GROUP BY account_id, symbol",
            accounts,
        )
    found = Divergences()
    _compare_orders(found, oms_orders, venue_orders)
    _compare_fills(found, oms_orders, oms_fills, venue_fills)
    _compare_ledger(found, oms_balances, venue_balances, reservations, positions, net_fills)
    return found


def _compare_orders(found: Divergences, oms_orders: list[sa.Row[Any]], venue_orders: list[sa.Row[Any]]) -> None:
    oms_count = Counter((r.account_id, r.client_order_id) for r in oms_orders)
    venue_count = Counter((r.account_id, r.client_order_id) for r in venue_orders)
    found.duplicate_oms_orders = sum(n - 1 for n in oms_count.values())
    found.duplicate_venue_orders = sum(n - 1 for n in venue_count.values())
    venue = {(r.account_id, r.client_order_id): r for r in venue_orders}
    oms = {(r.account_id, r.client_order_id): r for r in oms_orders}
    for key, order in oms.items():
        _compare_order(found, f"{key[0]}/{key[1]}:{order.status}", order, venue.get(key))
    for key, order in venue.items():
        if order.status == "open" and (key not in oms or oms[key].status not in OPEN):
            found.orphans_at_venue.append(f"{key[0]}/{key[1]} oms={oms[key].status if key in oms else None}")


def _compare_order(found: Divergences, label: str, order: sa.Row[Any], at_venue: sa.Row[Any] | None) -> None:
    venue_status = None if at_venue is None else at_venue.status
    if order.status == "submitted":
        found.unresolved.append(label)
    elif order.status in OPEN:
        if venue_status != "open":
            found.orphans_in_oms.append(f"{label} venue={venue_status}")
    elif order.status in NEVER_AT_VENUE or (order.status == "rejected" and at_venue is None):
        if at_venue is not None:
            found.status_mismatches.append(f"{label} venue={venue_status}")
    elif at_venue is None:
        if order.status == "canceled" and order.reason == "unknown_to_venue":
            found.canceled_unknown_to_venue.append(label)
        else:
            found.missing_at_venue.append(label)
    elif TERMINAL_AT_VENUE.get(order.status, order.status) != venue_status:
        found.status_mismatches.append(f"{label} venue={venue_status}")
    if at_venue is not None and at_venue.filled_quantity != order.filled_quantity:
        found.status_mismatches.append(f"{label} filled {order.filled_quantity} venue {at_venue.filled_quantity}")


def _compare_fills(
    found: Divergences,
    oms_orders: list[sa.Row[Any]],
    oms_fills: list[sa.Row[Any]],
    venue_fills: list[sa.Row[Any]],
) -> None:
    known = {(r.account_id, r.client_order_id) for r in oms_orders}
    recorded = {r.trade_id for r in oms_fills}
    at_venue = {r.trade_id for r in venue_fills}
    for fill in venue_fills:
        if fill.trade_id in recorded:
            continue
        target = found.missing_fills if (fill.account_id, fill.client_order_id) in known else found.unrecorded_fills
        target.append(f"{fill.account_id}/{fill.client_order_id}:{fill.trade_id}")
    found.extra_fills += [
        f"{r.account_id}/{r.client_order_id}:{r.trade_id}" for r in oms_fills if r.trade_id not in at_venue
    ]


def _compare_ledger(
    found: Divergences,
    oms_balances: list[sa.Row[Any]],
    venue_balances: list[sa.Row[Any]],
    reservations: list[sa.Row[Any]],
    positions: list[sa.Row[Any]],
    net_fills: list[sa.Row[Any]],
) -> None:
    zero = Decimal(0)
    ledger = {(r.account_id, r.asset): r.total for r in oms_balances}
    venue = {(r.account_id, r.asset): r.total for r in venue_balances}
    for key in sorted(set(ledger) | set(venue)):
        if ledger.get(key, zero) != venue.get(key, zero):
            found.balance_mismatches.append(f"{key[0]}/{key[1]} ledger {ledger.get(key)} venue {venue.get(key)}")
    held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for reservation in reservations:
        held[(reservation.account_id, reservation.asset)] += reservation.remaining
        if reservation.status not in OPEN and reservation.status not in {"submitted", "pending_approval"}:
            found.reservation_leaks.append(f"{reservation.order_id}:{reservation.status} holds {reservation.remaining}")
    for row in oms_balances:
        if row.reserved != held.get((row.account_id, row.asset), zero):
            found.reservation_leaks.append(
                f"{row.account_id}/{row.asset} reserved {row.reserved} != {held.get((row.account_id, row.asset))}"
            )
    net = {(r.account_id, r.symbol): r.net for r in net_fills}
    held_positions = {(r.account_id, r.symbol): r.quantity for r in positions}
    for key in sorted(set(net) | set(held_positions)):
        if net.get(key, zero) != held_positions.get(key, zero):
            found.position_mismatches.append(
                f"{key[0]}/{key[1]} position {held_positions.get(key)} fills {net.get(key)}"
            )


# --- crash points ------------------------------------------------------------------------------------------


class CrashPoint(StrEnum):
    BEFORE_COMMIT = "before_commit"
    BEFORE_SEND = "before_send"
    AFTER_SEND = "after_send"
    AFTER_APPLY = "after_apply"
    EXTERNAL = "external"  # the test sends SIGKILL at a seeded moment


class CrashSwitch:
    """Kills this process with SIGKILL when the armed point is reached."""

    armed: CrashPoint | None = None

    @classmethod
    def hit(cls, point: CrashPoint) -> None:
        if cls.armed is point:
            os.kill(os.getpid(), signal.SIGKILL)


class CrashingSession(AsyncSession):
    """The OMS's session: `commit` dies first when `before_commit` is armed (the transaction is rolled back)."""

    async def commit(self) -> None:
        CrashSwitch.hit(CrashPoint.BEFORE_COMMIT)
        await super().commit()


class CrashingVenue:
    """Wraps the paper venue: dies before the submit reaches it, or after it answered (`after_send`)."""

    def __init__(self, inner: PaperVenue) -> None:
        self.inner = inner
        self.name = inner.name

    def subscribe(self, listener: UpdateListener) -> None:
        self.inner.subscribe(listener)

    async def submit(self, request: VenueOrderRequest) -> VenueOrder:
        CrashSwitch.hit(CrashPoint.BEFORE_SEND)
        try:
            return await self.inner.submit(request)
        finally:  # an accepted order, or a rejection: either way the venue has answered
            CrashSwitch.hit(CrashPoint.AFTER_SEND)

    async def cancel(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder:
        return await self.inner.cancel(account_id, client_order_id)

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        return await self.inner.query(account_id, client_order_id)

    async def open_orders(self, account_id: AccountId) -> Sequence[VenueOrder]:
        return await self.inner.open_orders(account_id)

    async def fills_since(self, account_id: AccountId, after_sequence: int) -> Sequence[VenueFill]:
        return await self.inner.fills_since(account_id, after_sequence)

    async def balances(self, account_id: AccountId) -> Sequence[VenueBalance]:
        return await self.inner.balances(account_id)

    async def deposit(self, account_id: AccountId, asset: Any, amount: Decimal, reference: str) -> VenueBalance:
        return await self.inner.deposit(account_id, asset, amount, reference)


def crashing_listener(listener: UpdateListener) -> UpdateListener:
    """The venue's fills reach the OMS through this: `after_send` dies before the OMS applies the first one."""

    async def forward(update: VenueUpdate) -> None:
        CrashSwitch.hit(CrashPoint.AFTER_SEND)
        await listener(update)

    return forward


class CrashingOrderService(OrderService):
    """The real service; `after_apply` dies once `send` has applied the venue's answer, before `place` returns."""

    async def send(self, order_id: OrderId) -> None:
        await super().send(order_id)
        CrashSwitch.hit(CrashPoint.AFTER_APPLY)


# --- the fork server ---------------------------------------------------------------------------------------

_events_fd: list[int] = []


def emit(event: dict[str, Any]) -> None:
    """One JSON line on the events pipe (a single write: lines of parent and child never interleave)."""
    os.write(_events_fd[0], (json.dumps(event) + "\n").encode())


def acknowledge(ack_file: TextIO, record: dict[str, Any]) -> None:
    ack_file.write(json.dumps(record) + "\n")
    ack_file.flush()
    os.fsync(ack_file.fileno())


async def run_child(spec: dict[str, Any], ack_file: TextIO) -> None:
    """One OMS process: place the spec's orders, acknowledge each, die at the crash point (or wait to be killed)."""
    settings = oms_settings(spec["database_url"], spec["redis_url"], spec["symbols"], pool_size=3)
    oms = await start_oms(
        settings,
        session_class=CrashingSession,
        wrap_venue=CrashingVenue,
        wrap_listener=crashing_listener,
        service_class=CrashingOrderService,
    )
    emit({"event": "ready", "pid": os.getpid(), "run": spec["run"]})
    point = CrashPoint(spec["crash_point"])
    for index, raw in enumerate(spec["orders"]):
        body = OrderCreate.model_validate(raw)
        if index == spec["crash_at"] and point is not CrashPoint.EXTERNAL:
            CrashSwitch.armed = point
        record: dict[str, Any] = {"run": spec["run"], "account_id": body.account_id}
        record["client_order_id"] = body.client_order_id
        try:
            placed = await oms.service.place(body, ACTOR)
            record.update(order_id=placed.stored.order.id, status=placed.stored.order.status.value)
        except OrderDenied as exc:
            record.update(order_id=exc.details["order_id"], status="denied")
        acknowledge(ack_file, record)
    emit({"event": "placed_all", "pid": os.getpid(), "run": spec["run"]})
    await asyncio.Event().wait()  # the SIGKILL comes from the test


def _child(spec: dict[str, Any]) -> None:
    code = 0
    try:
        with open(spec["ack_path"], "a", encoding="utf-8") as ack_file:
            asyncio.run(run_child(spec, ack_file))
    except BaseException:  # the child must never return into the server's loop
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Fork one OMS child per spec line read on stdin; report how each ended."""
    _events_fd.append(os.dup(1))
    os.dup2(2, 1)  # anything printed goes to stderr: stdout is the events pipe only
    configure_logging("oms", "WARNING", stream=sys.stderr)
    emit({"event": "serving", "pid": os.getpid()})
    for line in sys.stdin:
        spec = json.loads(line)
        if threading.active_count() != 1:
            raise RuntimeError("the fork server must stay single-threaded")
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(spec)
        emit({"event": "forked", "pid": pid, "run": spec["run"]})
        _, status = os.waitpid(pid, 0)
        killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        emit({"event": "exited", "pid": pid, "run": spec["run"], "signal": killed_by, "code": exit_code})


if __name__ == "__main__":
    serve()
