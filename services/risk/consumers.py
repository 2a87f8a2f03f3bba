"""Kafka handlers of the risk service; each is idempotent through the `risk.inbox` table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.adapters import risk_adapters
from services.risk.controls import current_records
from services.risk.exits.workers import WORKERS as EXIT_WORKERS
from services.risk.repository import PendingRow, RiskRepository
from services.risk.service import AUDIT_CHAIN, DIRECTORS, RiskService
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.audit import append as audit_append
from shared.contracts.approvals import (
    ApprovalDecided,
    ApprovalDecision,
    LimitRaiseApprovalRequested,
    SubjectType,
    TradingResumeApprovalRequested,
)
from shared.contracts.base import ContractViolation
from shared.contracts.controls import ControlOwner
from shared.contracts.hedge import KillSwitchRecommended, RecommendationRearmed
from shared.contracts.registry import parse_as, parse_message
from shared.controls import SnapshotPublisher
from shared.domain.hedge import HedgeLevel
from shared.domain.money import format_decimal
from shared.domain.types import TradingState
from shared.events import Envelope
from shared.events.topics import HEDGE_RECOMMENDATION_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)

RECOMMENDATION_ACTOR = "hedge-recommendation"
# Every level has its state: a level the contract adds fails here (KeyError at import), never at run time.
LEVEL_STATES: Mapping[HedgeLevel, TradingState] = MappingProxyType(
    {
        HedgeLevel.PAUSE: TradingState.HALTED,
        HedgeLevel.REDUCE_ONLY: TradingState.REDUCING,
        HedgeLevel.FLATTEN: TradingState.REDUCING,
    }
)
assert set(LEVEL_STATES) == set(HedgeLevel)  # noqa: S101 - a new level needs a decision here


def risk_service(runtime: ServiceRuntime) -> RiskService:
    return risk_adapters(runtime).risk


async def handle_recommendation(risk: RiskService, session: AsyncSession, envelope: Envelope) -> None:
    """`KillSwitchRecommended` from the hedge service: applied to the account's trading state when
    AETHER_AUTO_APPLY_RECOMMENDATIONS is true; only ever tightens (a HALTED account stays HALTED)."""
    message = parse_message(envelope, HEDGE_RECOMMENDATION_EVENTS)  # ContractViolation: dead-lettered
    if isinstance(message, RecommendationRearmed):
        return
    if not isinstance(message, KillSwitchRecommended):
        raise ContractViolation(f"{envelope.type} is not a message of {HEDGE_RECOMMENDATION_EVENTS}")
    if not risk.settings.auto_apply_recommendations:
        return
    target = LEVEL_STATES[message.level]
    reason = (
        f"hedge recommendation {message.recommendation_id}: {message.level.value} "
        f"(drawdown {format_decimal(message.drawdown)}, threshold {format_decimal(message.threshold)})"
    )
    change = await risk.change_state_in(
        session, "account", message.account_id, target, reason, RECOMMENDATION_ACTOR, None
    )
    if change.changed:
        # The consumer loop commits this session: wake the relay once it has (the controls record goes out now).
        event.listen(session.sync_session, "after_commit", lambda _: risk.on_commit(), once=True)


def _recommendations(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        risk = risk_service(runtime)
        await run_consumer(
            runtime,
            name="risk.recommendations",
            topics=[HEDGE_RECOMMENDATION_EVENTS],
            handler=lambda session, envelope: handle_recommendation(risk, session, envelope),
        )

    return run


RISK_SUBJECTS = frozenset({SubjectType.LIMIT_RAISE, SubjectType.TRADING_RESUME})


async def handle_decision(risk: RiskService, session: AsyncSession, envelope: Envelope) -> None:
    """`ApprovalDecided` for a held limit raise or resume: applied once, only when the approved hash is the hash
    of the payload the risk service asked about; rejected, expired or another hash change nothing."""
    decided = parse_as(ApprovalDecided, envelope)  # ContractViolation: dead-lettered
    if decided.subject_type not in RISK_SUBJECTS:
        return
    repo = RiskRepository(session)
    pending = await repo.pending(decided.subject_id)
    if pending is None or pending.outcome is not None:
        log.warning("risk_decision_not_pending", subject_id=decided.subject_id[:200])
        return
    now = risk.clock()
    outcome = decided.decision.value
    if decided.decision is ApprovalDecision.APPROVED and decided.payload_hash != pending.payload_hash:
        outcome = "approval_mismatch"
    elif decided.decision is ApprovalDecision.APPROVED:
        await _apply(risk, session, pending, "hitl:" + ",".join(decided.approvers))
    await repo.resolve_pending(pending.subject_id, outcome, now)
    await audit_append(
        session,
        actor="hitl:" + (",".join(decided.approvers) or outcome),
        action=f"risk.{pending.kind}_{outcome}",
        target=f"account:{pending.account_id}",
        details={"subject_id": pending.subject_id, "payload_hash": decided.payload_hash, "reason": decided.reason},
        chain=AUDIT_CHAIN,
        occurred_at=now,
    )
    event.listen(session.sync_session, "after_commit", lambda _: risk.on_commit(), once=True)


async def _apply(risk: RiskService, session: AsyncSession, pending: PendingRow, actor: str) -> None:
    payload = pending.payload
    if pending.kind == SubjectType.LIMIT_RAISE:
        request = LimitRaiseApprovalRequested.model_validate(payload)
        await RiskRepository(session).lock_limits(pending.account_id)
        values = request.limits.model_dump(mode="json")
        await risk.store_limits_in(session, pending.account_id, values, request.reason, actor)
        return
    resume = TradingResumeApprovalRequested.model_validate(payload)
    # The state may have moved since (another kill switch): the change applies from whatever it is now.
    await risk.change_state_in(
        session, "account", pending.account_id, resume.to_state, resume.reason, actor, DIRECTORS, approved=True
    )


def _decisions(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        risk = risk_service(runtime)
        await run_consumer(
            runtime,
            name="risk.approval-decisions",
            topics=[risk.settings.decisions_topic],
            handler=lambda session, envelope: handle_decision(risk, session, envelope),
        )

    return run


def _controls_snapshot(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        risk = risk_service(runtime)
        publisher = SnapshotPublisher(
            owner=ControlOwner.RISK,
            topic=risk.settings.risk_controls_topic,
            bootstrap=risk.settings.kafka_bootstrap,
            sessionmaker=risk.sessionmaker,
            tables=risk.tables,
            clock=risk.clock,
            records=current_records,
            on_commit=risk.on_commit,
        )
        await publisher.run(runtime.stop_event)

    return run


def _state_metrics(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await risk_adapters(runtime).state_metrics.refresher.run(runtime.stop_event)

    return run


# (name, worker factory) pairs started by the app's lifespan.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("controls-snapshot", _controls_snapshot),
    ("state-metrics", _state_metrics),
    ("recommendations", _recommendations),
    ("approval-decisions", _decisions),
    *EXIT_WORKERS,
)
