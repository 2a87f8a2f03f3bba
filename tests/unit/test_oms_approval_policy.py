"""The OMS's approval rules under a mirrored hitl policy (pure code: services/oms/approval_policy.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.oms.approval_policy import (
    ApprovalPolicy,
    OrderFacts,
    approval_reasons,
    policy_from_json,
    threshold_reasons,
)

POLICY = ApprovalPolicy(version=3, notional_threshold=Decimal("1000"), new_instrument=True)


def facts(notional: str, *, known: bool = True, reduces: bool = False) -> OrderFacts:
    return OrderFacts(Decimal(notional), instrument_known=known, reduces_held_position=reduces)


def test_threshold_is_inclusive_and_new_instrument_comes_second() -> None:
    assert approval_reasons(POLICY, facts("999.99")) == []
    assert approval_reasons(POLICY, facts("1000")) == ["notional_above_threshold"]
    assert approval_reasons(POLICY, facts("5", known=False)) == ["new_instrument"]
    assert approval_reasons(POLICY, facts("1000", known=False)) == ["notional_above_threshold", "new_instrument"]


def test_a_sell_reducing_a_held_position_is_never_a_new_instrument_but_notional_still_counts() -> None:
    assert approval_reasons(POLICY, facts("5", known=False, reduces=True)) == []
    assert approval_reasons(POLICY, facts("2000", known=False, reduces=True)) == ["notional_above_threshold"]


def test_rules_switched_off() -> None:
    off = ApprovalPolicy(version=1, notional_threshold=None, new_instrument=False)
    assert approval_reasons(off, facts("1000000", known=False)) == []


def test_without_a_policy_the_account_threshold_decides() -> None:
    assert threshold_reasons(Decimal("1000"), Decimal("1000")) == ["notional_above_threshold"]
    assert threshold_reasons(Decimal("1000"), Decimal("999")) == []
    assert threshold_reasons(None, Decimal("1000000")) == []


def test_mirrored_json_is_parsed_with_decimal_strings() -> None:
    parsed = policy_from_json({"version": 2, "notional_threshold": "1000.50", "new_instrument": False, "quorum": 2})
    assert parsed == ApprovalPolicy(version=2, notional_threshold=Decimal("1000.50"), new_instrument=False)


@pytest.mark.parametrize(
    "value",
    [
        {"notional_threshold": "1"},
        {"version": 0},
        {"version": True},
        {"version": 1, "notional_threshold": "abc"},
        {"version": 1, "notional_threshold": "-5"},
        {"version": 1, "notional_threshold": "NaN"},
        {"version": 1, "new_instrument": "yes"},
    ],
)
def test_unreadable_values_are_refused(value: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError, KeyError, ArithmeticError)):
        policy_from_json(value)
