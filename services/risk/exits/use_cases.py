"""The exit engine's use cases, assembled once per process (REST, consumers, market data and clock workers)."""

from __future__ import annotations

from dataclasses import dataclass

from services.risk.exits.brackets import AmendBracket, ReadBrackets
from services.risk.exits.order_events import ApplyOrderEvent
from services.risk.exits.policies import ExitPolicies
from services.risk.exits.prices import ApplyPrices, CheckTimeLimits
from services.risk.exits.service import BracketWriter, ExitContext


@dataclass(frozen=True, slots=True)
class ExitUseCases:
    context: ExitContext
    order_events: ApplyOrderEvent
    prices: ApplyPrices
    time_limits: CheckTimeLimits
    brackets: ReadBrackets
    amend: AmendBracket
    policies: ExitPolicies


def exit_use_cases(context: ExitContext) -> ExitUseCases:
    writer = BracketWriter(context)
    policies = ExitPolicies(context)
    return ExitUseCases(
        context=context,
        order_events=ApplyOrderEvent(context, writer, policies),
        prices=ApplyPrices(writer),
        time_limits=CheckTimeLimits(context, writer),
        brackets=ReadBrackets(context),
        amend=AmendBracket(context, writer),
        policies=policies,
    )
