"""Use cases of the hedge service: repositories, shared.domain and the outbox inside one unit of work.

Inputs: prices from market data (`observe_price`, one row per symbol with the EWMA state) and the account's
balances from the OMS (`record_holdings`, NAV and its peak persisted). `evaluate` turns them into the target
hedge fraction, raises or re-arms kill-switch recommendations and, outside the rebalance band, queues one
`SubmitOrder` command with a deterministic client order id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.hedge.approval import (
    HEDGE_OVERRIDE_SUBJECT,
    OverrideApprovalPolicy,
    override_subject_id,
    parse_subject_id,
)
from services.hedge.config import HedgeSettings
from services.hedge.errors import (
    AccountNotTracked,
    InvalidOverride,
    InvalidPolicy,
    NoActiveOverride,
    NothingToRearm,
)
from services.hedge.metrics import (
    DRAWDOWN,
    EFFECTIVE_TARGET,
    HEDGE_ORDERS,
    RECOMMENDATIONS_RAISED,
    RECOMMENDATIONS_REARMED,
)
from services.hedge.repository import PENDING_APPROVAL, HedgeRepository
from services.hedge.schemas import (
    HedgeOrderRead,
    HedgeStatus,
    OverrideClear,
    OverrideHistoryRead,
    OverrideRead,
    OverrideSet,
    PendingOverrideRead,
    PolicyFields,
    PolicyRead,
    PolicyWrite,
    RearmRequest,
    RecommendationRead,
)
from shared.audit.log import append as audit_append
from shared.db import UnitOfWork
from shared.domain.hedge import (
    HedgeLevel,
    HedgePolicy,
    HedgePolicyError,
    HedgeTrade,
    VolatilityState,
    drawdown,
    hedge_client_order_id,
    hedge_fraction,
    hedge_trade,
    levels_to_raise,
    levels_to_rearm,
    next_peak,
    rebalance_to,
    target_fraction,
    threshold_of,
    update_volatility,
)
from shared.domain.money import format_decimal
from shared.domain.types import TERMINAL_STATUSES, OrderSide
from shared.events import Envelope, add_to_outbox
from shared.events.tables import EventTables
from shared.observability.logging import get_logger

log = get_logger(__name__)

PRODUCER = "hedge"
AUTO_ACTOR = "hedge:auto-rearm"
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
MARKET_BUY_BUFFER = Decimal("1.06")  # the OMS reserves a slippage buffer on market buys: leave room for it


_text = format_decimal


@dataclass(frozen=True, slots=True)
class Valuation:
    """NAV of one account in the quote currency from its balances and the latest prices."""

    nav: Decimal
    quote_value: Decimal
    unpriced: tuple[str, ...]


def value_holdings(holdings: Mapping[str, Any], prices: Mapping[str, Decimal], quote: str) -> Valuation:
    """Sum every balance at its `<asset>/<quote>` price; assets without a price are left out and listed."""
    nav = Decimal(0)
    quote_value = Decimal(0)
    unpriced: list[str] = []
    for asset, balance in sorted(holdings.items()):
        total = Decimal(str(balance["total"]))
        if asset == quote:
            quote_value += total
            nav += total
        elif (price := prices.get(f"{asset}/{quote}")) is not None:
            nav += total * price
        elif total != 0:
            unpriced.append(asset)
    return Valuation(nav=nav, quote_value=quote_value, unpriced=tuple(unpriced))


@dataclass(frozen=True, slots=True)
class HedgePosition:
    """Base the hedge has sold (net of buy-backs), base the account holds, and the resulting hedge fraction."""

    hedged: Decimal
    held: Decimal
    current: Decimal


class HedgeService:
    """The hedge service's use cases; one instance per process, shared by REST and the workers."""

    def __init__(
        self,
        *,
        settings: HedgeSettings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tables: EventTables,
        clock: Callable[[], datetime],
        on_commit: Callable[[], None] = lambda: None,
        approvals: OverrideApprovalPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.approvals = approvals  # None: overrides never wait for approval
        self.policy = settings.policy()
        self.sessionmaker = sessionmaker
        self.tables = tables
        self.clock = clock
        self.on_commit = on_commit

    def _uow(self) -> UnitOfWork:
        uow = UnitOfWork(self.sessionmaker)
        uow.after_commit(self.on_commit)
        return uow

    # --- inputs --------------------------------------------------------------------------------------------

    async def observe_price(self, session: AsyncSession, symbol: str, price: Decimal, at: datetime) -> None:
        """Fold a market price into the symbol's EWMA volatility and keep it as the latest valuation price."""
        repo = HedgeRepository(session)
        row = await repo.lock_volatility(symbol)
        state = None
        if row is not None:
            state = VolatilityState(row["last_price"], row["variance"], row["samples"], row["sampled_at"])
        updated = update_volatility(
            state, price, at, self.policy.ewma_lambda, min_interval_s=self.settings.vol_sample_interval_s
        )
        await repo.save_volatility(
            symbol,
            last_price=updated.last_price,
            variance=updated.variance,
            samples=updated.samples,
            sampled_at=updated.sampled_at,
            price=price,
            priced_at=at,
        )

    async def tracked_accounts(self) -> list[str]:
        """Accounts from the settings and those the service has seen."""
        async with UnitOfWork(self.sessionmaker) as uow:
            seen = await HedgeRepository(uow.session).account_ids()
        return sorted({*self.settings.accounts, *seen})

    async def record_holdings(self, account_id: str, balances: Mapping[str, Mapping[str, Decimal]]) -> None:
        """Store the account's balances, value them, move the NAV peak, then evaluate the hedge."""
        now = self.clock()
        holdings = {asset: {name: str(value) for name, value in row.items()} for asset, row in balances.items()}
        async with self._uow() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            row = await repo.lock_account(account_id)
            assert row is not None  # noqa: S101 - inserted just above in this transaction
            valuation = value_holdings(holdings, await repo.prices(), self.settings.quote_asset)
            if valuation.unpriced:
                # A NAV without some asset would look like a drawdown: keep the balances, judge nothing.
                await repo.update_account(account_id, holdings=holdings, holdings_at=now)
                log.warning("hedge_nav_incomplete", account_id=account_id, unpriced=list(valuation.unpriced))
                return
            peak = next_peak(row["peak_nav"], valuation.nav)
            values: dict[str, Any] = {"holdings": holdings, "holdings_at": now, "nav": valuation.nav, "peak_nav": peak}
            if peak != row["peak_nav"]:
                values["peak_at"] = now
            await repo.update_account(account_id, **values)
            if valuation.nav != row["nav"] or peak != row["peak_nav"]:
                await repo.add_nav(account_id, valuation.nav, peak, now)  # history of changes, not of polls
            await self.evaluate(uow.session, account_id)

    # --- evaluation ----------------------------------------------------------------------------------------

    async def evaluate(self, session: AsyncSession, account_id: str) -> None:
        """Recompute target, recommendations and (outside the band) the hedge order, in the caller's transaction."""
        repo = HedgeRepository(session)
        row = await repo.lock_account(account_id)
        if row is None or row["holdings"] is None or row["nav"] is None:
            return
        now = self.clock()
        vol_row = await repo.volatility(self.settings.hedge_symbol)
        vol = VolatilityState(vol_row["last_price"], vol_row["variance"], 0, now).volatility if vol_row else Decimal(0)
        dd = drawdown(row["peak_nav"], row["nav"])
        policy = await self._policy(repo, account_id)
        computed = target_fraction(policy, vol, dd)
        override = await repo.override(account_id)
        fixed = _override_target(override, now)
        effective = computed if fixed is None else fixed
        hedged = await repo.hedged_base(account_id)
        held = _total(row["holdings"], self.settings.base_asset)
        current = hedge_fraction(hedged, held)
        await repo.update_account(
            account_id,
            drawdown=dd,
            volatility=vol,
            computed_target=computed,
            effective_target=effective,
            current_fraction=current,
            evaluated_at=now,
        )
        DRAWDOWN.labels(account_id).set(float(dd))  # metrics are floats; the stored values stay Decimal
        EFFECTIVE_TARGET.labels(account_id).set(float(effective))
        await self._recommend(session, policy, account_id, dd, now)
        if vol_row is not None:
            position = HedgePosition(hedged=hedged, held=held, current=current)
            await self._rebalance(session, row, position, (effective, policy.band), vol_row["price"], now)

    async def _policy(self, repo: HedgeRepository, account_id: str) -> HedgePolicy:
        row = await repo.policy(account_id)
        if row is None:
            return self.policy
        return PolicyFields.model_validate(row["policy"]).policy(self.policy.ewma_lambda)

    async def _recommend(
        self, session: AsyncSession, policy: HedgePolicy, account_id: str, dd: Decimal, now: datetime
    ) -> None:
        repo = HedgeRepository(session)
        active = await repo.active_recommendations([account_id])
        raised = {HedgeLevel(rec["level"]): rec for rec in active}
        for level in levels_to_rearm(policy, dd, set(raised)):
            reason = f"drawdown {_text(dd)} recovered below {_text(threshold_of(policy, level))} - hysteresis"
            await self._rearm_one(session, raised[level], AUTO_ACTOR, reason, now)
        for level in levels_to_raise(policy, dd, set(raised)):
            await self._raise(session, account_id, level, threshold_of(policy, level), dd, now)

    async def _raise(
        self, session: AsyncSession, account_id: str, level: HedgeLevel, threshold: Decimal, dd: Decimal, now: datetime
    ) -> None:
        recommendation_id = str(uuid.uuid4())
        inserted = await HedgeRepository(session).insert_recommendation(
            recommendation_id=recommendation_id,
            account_id=account_id,
            level=level.value,
            drawdown=dd,
            threshold=threshold,
            raised_at=now,
        )
        if not inserted:
            return
        payload: dict[str, Any] = {
            "recommendation_id": recommendation_id,
            "account_id": account_id,
            "level": level.value,
            "drawdown": _text(dd),
            "threshold": _text(threshold),
            "raised_at": now.isoformat(),
        }
        await self._emit(session, self.settings.recommendation_topic, "KillSwitchRecommended", account_id, payload)
        await audit_append(
            session,
            actor=PRODUCER,
            action="hedge.recommendation_raised",
            target=account_id,
            details=payload,
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )
        RECOMMENDATIONS_RAISED.labels(level.value).inc()
        log.warning("kill_switch_recommended", account_id=account_id, level=level.value, drawdown=_text(dd))

    async def _rearm_one(
        self, session: AsyncSession, recommendation: RowMapping, actor: str, reason: str, now: datetime
    ) -> None:
        account_id = recommendation["account_id"]
        await HedgeRepository(session).rearm(recommendation["recommendation_id"], now, actor, reason)
        payload: dict[str, Any] = {
            "recommendation_id": recommendation["recommendation_id"],
            "account_id": account_id,
            "level": recommendation["level"],
            "actor": actor,
            "reason": reason,
            "rearmed_at": now.isoformat(),
        }
        await self._emit(session, self.settings.recommendation_topic, "RecommendationRearmed", account_id, payload)
        RECOMMENDATIONS_REARMED.labels("auto" if actor == AUTO_ACTOR else "manual").inc()
        await audit_append(
            session,
            actor=actor,
            action="hedge.recommendation_rearmed",
            target=account_id,
            details=payload,
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )

    async def _rebalance(
        self,
        session: AsyncSession,
        row: RowMapping,
        position: HedgePosition,
        target_and_band: tuple[Decimal, Decimal],
        price: Decimal,
        now: datetime,
    ) -> None:
        account_id = row["account_id"]
        repo = HedgeRepository(session)
        if not self.settings.orders_enabled or await repo.open_order(account_id) is not None:
            return
        settled_at = await repo.last_settled_at(account_id)
        if settled_at is not None and row["holdings_at"] <= settled_at:
            return  # the balances predate the last hedge fill: wait for fresh ones before sizing again
        new_fraction = rebalance_to(position.current, *target_and_band)
        if new_fraction is None:
            return
        trade = hedge_trade(
            position.hedged,
            position.held,
            new_fraction,
            self.settings.quantity_increment,
            self.settings.min_quantity,
        )
        trade = self._within_balances(trade, row["holdings"], price)
        if trade is None:
            return
        await self._submit(session, row, trade, position.current, new_fraction, now)

    def _within_balances(
        self, trade: HedgeTrade | None, holdings: Mapping[str, Any], price: Decimal
    ) -> HedgeTrade | None:
        """Spot only: a sell never exceeds the free base balance, a buy never the free quote balance."""
        if trade is None:
            return None
        if trade.side is OrderSide.SELL:
            free = _free(holdings, self.settings.base_asset)
        else:
            free = _free(holdings, self.settings.quote_asset) / (price * MARKET_BUY_BUFFER)
        quantity = min(trade.quantity, free).quantize(self.settings.quantity_increment, rounding=ROUND_DOWN)
        if quantity <= 0 or quantity < self.settings.min_quantity:
            return None
        return HedgeTrade(side=trade.side, quantity=quantity)

    async def _submit(
        self,
        session: AsyncSession,
        row: RowMapping,
        trade: HedgeTrade,
        current: Decimal,
        new_fraction: Decimal,
        now: datetime,
    ) -> None:
        account_id = row["account_id"]
        version = row["target_version"] + 1
        client_order_id = hedge_client_order_id(account_id, version)
        repo = HedgeRepository(session)
        await repo.update_account(account_id, target_version=version)
        await repo.insert_order(
            client_order_id=client_order_id,
            account_id=account_id,
            target_version=version,
            symbol=self.settings.hedge_symbol,
            side=trade.side.value,
            quantity=trade.quantity,
            from_fraction=current,
            to_fraction=new_fraction,
            status="sent",
            created_at=now,
        )
        order: dict[str, Any] = {
            "account_id": account_id,
            "client_order_id": client_order_id,
            "symbol": self.settings.hedge_symbol,
            "side": trade.side.value,
            "type": "market",
            "quantity": _text(trade.quantity),
        }
        command = Envelope.new(
            type="SubmitOrder", producer=PRODUCER, aggregate_id=client_order_id, payload={"order": order}, now=now
        )
        await add_to_outbox(session, self.tables, topic=self.settings.commands_topic, envelope=command, key=account_id)
        target: dict[str, Any] = {
            "account_id": account_id,
            "target_version": version,
            "from_fraction": _text(current),
            "to_fraction": _text(new_fraction),
            "client_order_id": client_order_id,
            "side": trade.side.value,
            "quantity": _text(trade.quantity),
        }
        await self._emit(session, self.settings.target_topic, "HedgeRebalanceRequested", account_id, target)
        HEDGE_ORDERS.labels(trade.side.value).inc()
        await audit_append(
            session,
            actor=PRODUCER,
            action="hedge.order_requested",
            target=account_id,
            details=target,
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )

    async def _emit(
        self, session: AsyncSession, topic: str, event_type: str, account_id: str, payload: dict[str, Any]
    ) -> None:
        envelope = Envelope.new(
            type=event_type, producer=PRODUCER, aggregate_id=account_id, payload=payload, now=self.clock()
        )
        await add_to_outbox(session, self.tables, topic=topic, envelope=envelope, key=account_id)

    # --- order events --------------------------------------------------------------------------------------

    async def on_order_event(self, session: AsyncSession, envelope: Envelope) -> None:
        """Settle our hedge orders from the OMS's order events; fills put the account under watch."""
        payload = envelope.payload
        repo = HedgeRepository(session)
        if envelope.type == "CommandRejected":
            if await repo.settle_order(envelope.aggregate_id, "command_rejected", self.clock()):
                log.warning(
                    "hedge_order_rejected", client_order_id=envelope.aggregate_id, code=str(payload.get("code"))
                )
            return
        account_id, client_order_id, status = (payload.get(key) for key in ("account_id", "client_order_id", "status"))
        if not isinstance(account_id, str) or not isinstance(client_order_id, str) or not isinstance(status, str):
            return
        if envelope.type == "OrderFilled":
            await repo.ensure_account(account_id)
            filled = payload.get("filled_quantity")
            if isinstance(filled, str):
                await repo.record_fill(client_order_id, Decimal(filled))
        if status in TERMINAL:
            await repo.settle_order(client_order_id, status, self.clock())
        else:
            await repo.update_order_status(client_order_id, status)

    # --- operator actions ----------------------------------------------------------------------------------

    async def request_override(
        self, account_id: str, body: OverrideSet, actor: str, requester: str
    ) -> tuple[HedgeStatus, bool]:
        """Set the override at once, or, when the account's hitl policy says so, store it pending approval and
        ask the approval service (`requester` becomes the request's requested_by). Returns (status, pending)."""
        if body.expires_at <= self.clock():
            raise InvalidOverride("expires_at: must lie in the future", details={"field": "expires_at"})
        if self.approvals is None or not await self.approvals.needs_approval(account_id):
            return await self.set_override(account_id, body, actor), False
        now = self.clock()
        async with self._uow() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            await repo.lock_account(account_id)
            previous = await repo.override(account_id)
            row_id = await self._override_history(uow.session, account_id, PENDING_APPROVAL, body, previous, actor, now)
            payload: dict[str, Any] = {
                "subject_type": HEDGE_OVERRIDE_SUBJECT,
                "subject_id": override_subject_id(account_id, row_id),
                "account_id": account_id,
                "requested_by": requester,
                "target_fraction": _text(body.target_fraction),
                "reason": body.reason,
                "expires_at": body.expires_at.isoformat(),
                "previous_fraction": None if previous is None else _text(previous["target_fraction"]),
                "requested_at": now.isoformat(),
            }
            await self._emit(uow.session, self.settings.target_topic, "ApprovalRequested", account_id, payload)
        return await self.status(account_id), True

    async def set_override(self, account_id: str, body: OverrideSet, actor: str) -> HedgeStatus:
        """Fix the account's target until `expires_at`; history row and audit entry in the same transaction."""
        now = self.clock()
        if body.expires_at <= now:
            raise InvalidOverride("expires_at: must lie in the future", details={"field": "expires_at"})
        async with self._uow() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            await repo.lock_account(account_id)
            previous = await repo.override(account_id, lock=True)
            await repo.save_override(
                account_id,
                target_fraction=body.target_fraction,
                reason=body.reason,
                expires_at=body.expires_at,
                set_by=actor,
                set_at=now,
            )
            await self._override_history(uow.session, account_id, "set", body, previous, actor, now)
            await self.evaluate(uow.session, account_id)
        return await self.status(account_id)

    async def clear_override(self, account_id: str, body: OverrideClear, actor: str) -> HedgeStatus:
        """Remove the account's override (404 when there is none); history and audit as for setting one."""
        now = self.clock()
        async with self._uow() as uow:
            repo = HedgeRepository(uow.session)
            await repo.lock_account(account_id)
            previous = await repo.override(account_id, lock=True)
            if previous is None:
                raise NoActiveOverride(f"account {account_id} has no override")
            await repo.delete_override(account_id)
            await self._override_history(uow.session, account_id, "clear", body, previous, actor, now)
            await self.evaluate(uow.session, account_id)
        return await self.status(account_id)

    async def _override_history(
        self,
        session: AsyncSession,
        account_id: str,
        action: str,
        body: OverrideSet | OverrideClear,
        previous: RowMapping | None,
        actor: str,
        now: datetime,
    ) -> int:
        values: dict[str, Any] = {
            "action": action,
            "target_fraction": body.target_fraction if isinstance(body, OverrideSet) else None,
            "expires_at": body.expires_at if isinstance(body, OverrideSet) else None,
            "previous_fraction": previous["target_fraction"] if previous else None,
            "previous_expires_at": previous["expires_at"] if previous else None,
            "reason": body.reason,
            "actor": actor,
            "occurred_at": now,
        }
        row_id = await HedgeRepository(session).add_override_history(account_id, **values)
        details = {key: _jsonable(value) for key, value in values.items() if key not in {"actor", "occurred_at"}}
        await audit_append(
            session,
            actor=actor,
            action=f"hedge.override_{action}",
            target=account_id,
            details=details,
            chain=f"hedge:{account_id}",
            occurred_at=now,
        )
        return row_id

    async def on_decision(self, session: AsyncSession, envelope: Envelope) -> None:
        """An `ApprovalDecided` for a pending override: approved makes it the override in force, rejected or
        expired drops it; history row and audit entry either way (other subjects are ignored)."""
        payload = envelope.payload
        if envelope.type != "ApprovalDecided" or payload.get("subject_type") != HEDGE_OVERRIDE_SUBJECT:
            return
        parsed = parse_subject_id(str(payload.get("subject_id", "")))
        decision = str(payload.get("decision"))
        if parsed is None or decision not in {"approved", "rejected", "expired"}:
            log.warning("hedge_decision_skipped", subject_id=str(payload.get("subject_id"))[:200], decision=decision)
            return
        account_id, row_id = parsed
        repo = HedgeRepository(session)
        await repo.lock_account(account_id)
        pending = await repo.resolve_pending(account_id, row_id)
        if pending is None:
            log.warning("hedge_decision_not_pending", account_id=account_id, row_id=row_id, decision=decision)
            return
        now = self.clock()
        raw_approvers = payload.get("approvers")
        approvers = [str(name) for name in raw_approvers] if isinstance(raw_approvers, list) else []
        actor = "hitl:" + (",".join(approvers) if approvers else decision)
        reason = pending["reason"] if decision == "approved" else f"{decision}: {payload.get('reason') or decision}"
        body = OverrideSet.model_construct(
            target_fraction=pending["target_fraction"], reason=reason, expires_at=pending["expires_at"]
        )
        previous = await repo.override(account_id, lock=True)
        if decision == "approved":
            await repo.save_override(
                account_id,
                target_fraction=pending["target_fraction"],
                reason=pending["reason"],
                expires_at=pending["expires_at"],
                set_by=pending["actor"],
                set_at=now,
            )
        await self._override_history(session, account_id, decision, body, previous, actor, now)
        await self.evaluate(session, account_id)

    async def rearm(self, account_id: str, body: RearmRequest, actor: str) -> list[RecommendationRead]:
        """Re-arm raised recommendations by hand (audited); 409 when none of the asked level is raised."""
        now = self.clock()
        async with self._uow() as uow:
            repo = HedgeRepository(uow.session)
            await repo.lock_account(account_id)
            active = [
                rec
                for rec in await repo.active_recommendations([account_id])
                if body.level is None or rec["level"] == body.level.value
            ]
            if not active:
                raise NothingToRearm(f"no raised recommendation to re-arm for account {account_id}")
            for rec in active:
                await self._rearm_one(uow.session, rec, actor, body.reason, now)
        return [
            RecommendationRead(**{**rec, "rearmed_at": now, "rearmed_by": actor, "rearm_reason": body.reason})
            for rec in active
        ]

    async def set_policy(self, account_id: str, body: PolicyWrite, actor: str) -> PolicyRead:
        """A new version of the account's policy (audited with the previous version), then a re-evaluation."""
        now = self.clock()
        try:
            body.policy(self.policy.ewma_lambda)
        except HedgePolicyError as exc:
            raise InvalidPolicy(str(exc), details={"field": exc.field}) from None
        fields = body.model_dump(mode="json", exclude={"reason"})
        async with self._uow() as uow:
            repo = HedgeRepository(uow.session)
            await repo.ensure_account(account_id)
            await repo.lock_account(account_id)
            previous = await repo.policy(account_id)
            version = 1 if previous is None else previous["version"] + 1
            await repo.add_policy(account_id, version, policy=fields, reason=body.reason, set_by=actor, set_at=now)
            await audit_append(
                uow.session,
                actor=actor,
                action="hedge.policy_set",
                target=account_id,
                details={
                    "version": version,
                    "policy": fields,
                    "reason": body.reason,
                    "previous": None if previous is None else previous["policy"],
                },
                chain=f"hedge:{account_id}",
                occurred_at=now,
            )
            await self.evaluate(uow.session, account_id)
        return await self.get_policy(account_id)

    async def get_policy(self, account_id: str) -> PolicyRead:
        """The account's policy in force: its newest version, or the service default (version 0)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            row = await HedgeRepository(uow.session).policy(account_id)
        if row is not None:
            return PolicyRead(
                **row["policy"],
                account_id=account_id,
                version=row["version"],
                reason=row["reason"],
                set_by=row["set_by"],
                set_at=row["set_at"],
            )
        return PolicyRead(
            **self._default_policy_fields(), account_id=account_id, version=0, reason=None, set_by=None, set_at=None
        )

    def _default_policy_fields(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "vol_weight": settings.vol_weight,
            "drawdown_weight": settings.drawdown_weight,
            "vol_saturation": settings.vol_saturation,
            "drawdown_saturation": settings.drawdown_saturation,
            "floor": settings.target_floor,
            "cap": settings.target_cap,
            "band": settings.rebalance_band,
            "pause_drawdown": settings.pause_drawdown,
            "reduce_only_drawdown": settings.reduce_only_drawdown,
            "flatten_drawdown": settings.flatten_drawdown,
            "rearm_hysteresis": settings.rearm_hysteresis,
        }

    # --- reading -------------------------------------------------------------------------------------------

    async def status(self, account_id: str) -> HedgeStatus:
        """The account's hedge status (404 when the service does not track it)."""
        statuses = await self.statuses([account_id])
        if not statuses:
            raise AccountNotTracked(f"account {account_id} is not hedged by this service")
        return statuses[0]

    async def statuses(self, account_ids: Sequence[str] | None) -> list[HedgeStatus]:
        """Status of the given tracked accounts (every tracked account for None)."""
        now = self.clock()
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = HedgeRepository(uow.session)
            rows = await repo.account_rows(account_ids)
            prices = await repo.prices()
            active = await repo.active_recommendations([row["account_id"] for row in rows])
            result = []
            for row in rows:
                override = await repo.override(row["account_id"])
                extra: dict[str, Any] = {
                    "pending_override": _pending_read(await repo.pending_override(row["account_id"]))
                }
                open_order = await repo.open_order(row["account_id"])
                recs = [rec for rec in active if rec["account_id"] == row["account_id"]]
                hedged = await repo.hedged_base(row["account_id"])
                policy = await repo.policy(row["account_id"])
                band = Decimal(policy["policy"]["band"]) if policy is not None else self.policy.band
                extra |= {
                    "hedged_quantity": hedged,
                    "rebalance_band": band,
                    "policy_version": policy["version"] if policy else 0,
                    "unpriced_assets": list(
                        value_holdings(row["holdings"] or {}, prices, self.settings.quote_asset).unpriced
                    ),
                }
                result.append(self._status(row, override, open_order, recs, extra, now))
        return result

    def _status(
        self,
        row: RowMapping,
        override: RowMapping | None,
        open_order: RowMapping | None,
        recs: Sequence[RowMapping],
        extra: dict[str, Any],
        now: datetime,
    ) -> HedgeStatus:
        override_read = None
        if override is not None:
            override_read = OverrideRead(
                **{key: override[key] for key in ("target_fraction", "reason", "expires_at", "set_by", "set_at")},
                active=_active(override, now),
            )
        fixed = _override_target(override, now)
        effective = row["computed_target"] if fixed is None else fixed
        return HedgeStatus(
            account_id=row["account_id"],
            hedge_symbol=self.settings.hedge_symbol,
            nav=row["nav"],
            peak_nav=row["peak_nav"],
            peak_at=row["peak_at"],
            drawdown=row["drawdown"],
            volatility=row["volatility"],
            computed_target=row["computed_target"],
            override=override_read,
            effective_target=effective,
            current_fraction=row["current_fraction"],
            **extra,
            target_version=row["target_version"],
            open_order=HedgeOrderRead(**open_order) if open_order is not None else None,
            active_recommendations=[RecommendationRead(**rec) for rec in recs],
            holdings_at=row["holdings_at"],
            evaluated_at=row["evaluated_at"],
        )

    async def override_history(self, account_id: str, limit: int = 100) -> list[OverrideHistoryRead]:
        """The account's override changes, newest first."""
        async with UnitOfWork(self.sessionmaker) as uow:
            rows = await HedgeRepository(uow.session).override_history(account_id, limit)
        return [OverrideHistoryRead(**{key: row[key] for key in OverrideHistoryRead.model_fields}) for row in rows]

    async def active_recommendations(self, account_ids: Sequence[str] | None) -> list[RecommendationRead]:
        """Recommendations raised and not re-armed (for the given accounts, or all)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            rows = await HedgeRepository(uow.session).active_recommendations(account_ids)
        return [RecommendationRead(**row) for row in rows]


def _pending_read(row: RowMapping | None) -> PendingOverrideRead | None:
    if row is None:
        return None
    return PendingOverrideRead(
        subject_id=override_subject_id(row["account_id"], row["id"]),
        target_fraction=row["target_fraction"],
        reason=row["reason"],
        expires_at=row["expires_at"],
        requested_by=row["actor"],
        requested_at=row["occurred_at"],
    )


def _active(override: RowMapping | None, now: datetime) -> bool:
    return override is not None and override["expires_at"] > now


def _override_target(override: RowMapping | None, now: datetime) -> Decimal | None:
    if override is None or override["expires_at"] <= now:
        return None
    target: Decimal = override["target_fraction"]
    return target


def _total(holdings: Mapping[str, Any], asset: str) -> Decimal:
    balance = holdings.get(asset)
    return Decimal(0) if balance is None else Decimal(str(balance["total"]))


def _free(holdings: Mapping[str, Any], asset: str) -> Decimal:
    balance = holdings.get(asset)
    if balance is None:
        return Decimal(0)
    return max(Decimal(0), Decimal(str(balance["total"])) - Decimal(str(balance.get("reserved", "0"))))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
