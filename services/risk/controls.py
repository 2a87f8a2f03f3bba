"""What the risk service publishes on its compacted controls topic (`risk.controls.v1`) for the OMS to enforce:
every trading state, every account's current limits and exit policy (shared/contracts/controls.py).

Each change is published in the transaction that commits it (services/risk/service.py, exits/policies.py);
`current_records` is the snapshot the `controls-snapshot` worker publishes at start, the global state included
even when it never changed (version 0, ACTIVE), so the OMS can tell "never set" from "not received".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.policies import ExitPolicies
from services.risk.exits.repository import ExitRepository
from services.risk.exits.repository import StoredPolicy as StoredExitPolicy
from services.risk.repository import RiskRepository, StoredLimits, StoredState
from shared.contracts.controls import ControlRecord, ExitPolicySet, RiskLimitsSet, TradingStateSet
from shared.contracts.risk import RiskLimitsValue, TradingScope
from shared.domain.types import TradingState

NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def state_record(state: StoredState) -> TradingStateSet:
    return TradingStateSet(
        scope=TradingScope(state.scope),
        account_id=state.account_id,
        state=state.state,
        version=state.version,
        changed_at=state.changed_at,
    )


def limits_record(stored: StoredLimits) -> RiskLimitsSet:
    return RiskLimitsSet(
        account_id=stored.account_id, version=stored.version, limits=RiskLimitsValue.model_validate(stored.values)
    )


def exit_policy_record(stored: StoredExitPolicy) -> ExitPolicySet:
    return ExitPolicySet(account_id=stored.account_id, policy=ExitPolicies.value(stored))


async def current_records(session: AsyncSession) -> Sequence[ControlRecord]:
    """Every control the risk service holds now (the snapshot)."""
    repo = RiskRepository(session)
    states = await repo.all_states()
    records: list[ControlRecord] = [state_record(state) for state in states]
    if not any(state.scope == TradingScope.GLOBAL.value for state in states):
        records.append(
            TradingStateSet(
                scope=TradingScope.GLOBAL, account_id=None, state=TradingState.ACTIVE, version=0, changed_at=NEVER
            )
        )
    records += [limits_record(stored) for stored in await repo.all_current_limits()]
    records += [exit_policy_record(stored) for stored in await ExitRepository(session).all_policies()]
    return records
