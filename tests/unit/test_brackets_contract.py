"""The exit engine's messages against the OMS's own models: commands it sends, payloads it reads, ids it derives."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.oms.schemas import OrderCreate
from services.risk.exits.schemas import ExitPolicyWrite
from services.risk.exits.service import (
    bracket_id_for,
    bracket_id_of_exit,
    exit_order,
    levels_from_instructions,
)
from shared.contracts.exits import ExitInstructions
from shared.domain.brackets import ExitLevels, LegKind, SubmitExit, exit_client_order_id

IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


@pytest.mark.parametrize("limit_price", [Decimal("62400.1"), None])
def test_exit_orders_are_valid_oms_order_creates(limit_price: Decimal | None) -> None:
    bracket_id = bracket_id_for("desk-1", "3f2c0d1e-0000-4000-8000-000000000001")
    client_order_id = exit_client_order_id(bracket_id, LegKind.TAKE_PROFIT, 12_345)
    decision = SubmitExit(
        bracket_id, "desk-1", "BTC/USD", client_order_id, LegKind.TAKE_PROFIT, Decimal("0.1"), limit_price
    )
    order = OrderCreate.model_validate(exit_order(decision).model_dump(mode="json"))
    assert order.side.value == "sell"
    assert order.type.value == ("market" if limit_price is None else "limit")
    assert order.quantity == Decimal("0.1")
    assert order.limit_price == limit_price
    assert len(client_order_id) <= 64
    assert IDENTIFIER.match(client_order_id)


def test_exit_ids_lead_back_to_their_bracket_and_entries_do_not() -> None:
    bracket_id = bracket_id_for("desk-1", "order-9")
    assert bracket_id == bracket_id_for("desk-1", "order-9")  # derived, not random
    assert bracket_id != bracket_id_for("desk-2", "order-9")
    for leg in LegKind:
        assert bracket_id_of_exit(exit_client_order_id(bracket_id, leg, 1)) == bracket_id
    assert bracket_id_of_exit("buy-1") is None
    assert bracket_id_of_exit("x-short") is None
    assert bracket_id_of_exit(f"x-{bracket_id}-my-own-buy") is None


def test_exit_instructions_become_absolute_levels() -> None:
    exits = ExitInstructions.model_validate(
        {"stop_loss": "58000", "take_profit": "65000", "trailing": {"distance": "500", "activation_price": "61000"}}
    )
    assert levels_from_instructions(exits) == ExitLevels(
        stop_loss=Decimal(58000),
        take_profit=Decimal(65000),
        trailing_distance=Decimal(500),
        trailing_activation=Decimal(61000),
        time_limit_s=None,
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stop_loss_pct": "-1"}, "stop_loss_pct"),
        ({"stop_loss_pct": "100"}, "stop_loss_pct"),
        ({"take_profit_pct": "0"}, "take_profit_pct"),
        ({"trailing_distance_pct": "-0.5"}, "trailing_distance_pct"),
        ({"swap_band_pct": "-0.1"}, "swap_band_pct"),
        ({"trailing_distance_pct": None}, "trailing_activation_pct"),
        ({"stop_loss_pct": None, "trailing_distance_pct": None, "trailing_activation_pct": None}, "stop_loss_pct"),
        ({"stop_loss": "2"}, "stop_loss"),
    ],
)
def test_contradicting_policies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        ExitPolicyWrite.model_validate(body)
    first = error.value.errors()[0]
    assert field in ".".join(str(part) for part in first["loc"]) or str(first["msg"]).split(", ")[-1].startswith(field)
