"""The OMS's approval rules under a mirrored hitl policy (pure code: services/oms/approval_policy.py)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from services.oms.approval_policy import (
    ApprovalPolicy,
    OrderFacts,
    approval_reasons,
    threshold_reasons,
)
from shared.contracts.approvals import ApprovalPolicyValue
from shared.contracts.base import ContractViolation
from shared.contracts.mirror import decode_mirror

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


def test_the_mirrored_value_is_read_through_its_contract_with_decimal_strings() -> None:
    raw = json.dumps(
        {
            "account_id": "acct-1",
            "version": 2,
            "created_at": "2026-12-07T10:00:00+00:00",
            "notional_threshold": "1000.50",
            "new_instrument": False,
            "quorum": 2,
        }
    )
    value = decode_mirror(ApprovalPolicyValue, raw)
    assert (value.version, value.notional_threshold, value.new_instrument) == (2, Decimal("1000.50"), False)


BASE = {"account_id": "acct-1", "version": 1, "created_at": "2026-12-07T10:00:00+00:00"}


@pytest.mark.parametrize(
    "value",
    [
        {"notional_threshold": "1"},
        {**BASE, "version": 0},
        {**BASE, "version": True},
        {**BASE, "notional_threshold": "abc"},
        {**BASE, "notional_threshold": "-5"},
        {**BASE, "notional_threshold": "NaN"},
        {**BASE, "new_instrument": "yes"},
        {**BASE, "created_at": None},
        {**BASE, "rule_from_the_future": True},
    ],
)
def test_values_that_break_the_contract_are_refused(value: dict[str, Any]) -> None:
    with pytest.raises(ContractViolation):
        decode_mirror(ApprovalPolicyValue, json.dumps(value))


def test_a_model_driven_order_below_the_policys_confidence_minimum_waits_for_a_director() -> None:
    policy = ApprovalPolicy(3, notional_threshold=None, new_instrument=False, model_confidence_min=Decimal("0.7"))

    def with_confidence(value: str | None) -> OrderFacts:
        confidence = None if value is None else Decimal(value)
        return OrderFacts(
            Decimal("10"), instrument_known=True, reduces_held_position=False, model_confidence=confidence
        )

    assert approval_reasons(policy, with_confidence("0.69")) == ["low_model_confidence"]
    assert approval_reasons(policy, with_confidence("0.7")) == []  # the minimum itself passes, as in the hitl policy
    assert approval_reasons(policy, with_confidence(None)) == []  # not a model-driven order
    assert approval_reasons(POLICY, with_confidence("0.01")) == []  # a policy without the rule
