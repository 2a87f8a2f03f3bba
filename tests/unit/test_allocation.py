"""The allocator's arithmetic and the targets body's rules (issue 17 item 4)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.reports.allocation import Target, rebalance
from services.reports.schemas import TargetsWrite

D = Decimal


def targets(*shares: tuple[str, str, str]) -> list[Target]:
    return [Target(a, D(s), D(b)) for a, s, b in shares]


def test_inside_the_band_proposes_nothing() -> None:
    halves = targets(("a", "0.5", "0.05"), ("b", "0.5", "0.05"))
    assert rebalance(halves, {"a": D("540"), "b": D("460")}) is None  # 0.54: 0.04 off, inside 0.05
    assert rebalance(halves, {"a": D("0"), "b": D("0")}) is None  # no NAV: nothing to share


def test_the_most_over_allocated_pays_the_most_under_allocated_the_smaller_gap() -> None:
    three = targets(("a", "0.5", "0.05"), ("b", "0.3", "0.05"), ("c", "0.2", "0.05"))
    # NAV 1,000: a 0.70 (+0.20), b 0.25 (-0.05), c 0.05 (-0.15): a -> c, min(200, 150) = 150
    planned = rebalance(three, {"a": D("700"), "b": D("250"), "c": D("50")})
    assert planned is not None
    source, destination, amount, worst, share = planned
    assert (source, destination, amount, worst.account_id, share) == ("a", "c", D("150"), "a", D("0.7"))


def test_amounts_round_down_to_the_cent() -> None:
    halves = targets(("a", "0.5", "0.01"), ("b", "0.5", "0.01"))
    planned = rebalance(halves, {"a": D("100.015"), "b": D("50")})
    assert planned is not None
    assert planned[2] == D("25.00")  # the gap is 25.0075


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"targets": [{"account_id": "a", "target_share": "0.5", "band": "0.05"}]}, "targets"),
        (
            {
                "targets": [
                    {"account_id": "a", "target_share": "0.6", "band": "0.05"},
                    {"account_id": "b", "target_share": "0.6", "band": "0.05"},
                ]
            },
            "targets",
        ),
        (
            {
                "targets": [
                    {"account_id": "a", "target_share": "0.5", "band": "0.05"},
                    {"account_id": "a", "target_share": "0.5", "band": "0.05"},
                ]
            },
            "targets",
        ),
        (
            {
                "targets": [
                    {"account_id": "a", "target_share": "1.5", "band": "0.05"},
                    {"account_id": "b", "target_share": "-0.5", "band": "0.05"},
                ]
            },
            "target_share",
        ),
        (
            {
                "targets": [
                    {"account_id": "a", "target_share": "0.5", "band": "1"},
                    {"account_id": "b", "target_share": "0.5", "band": "0.05"},
                ]
            },
            "band",
        ),
    ],
)
def test_bad_targets_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        TargetsWrite.model_validate(body)
    assert field in str(raised.value)
