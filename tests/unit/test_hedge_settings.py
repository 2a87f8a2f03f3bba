"""Hedge settings refuse contradicting policies and name the setting."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.hedge.config import HedgeSettings


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"target_floor": Decimal("0.5"), "target_cap": Decimal("0.4")}, "AETHER_TARGET_CAP"),
        ({"vol_weight": Decimal(-1)}, "vol_weight"),
        ({"rebalance_band": Decimal("1.2")}, "rebalance_band"),
        ({"pause_drawdown": Decimal("0.3"), "flatten_drawdown": Decimal("0.2")}, "AETHER_PAUSE_DRAWDOWN"),
        ({"ewma_lambda": Decimal(0)}, "ewma_lambda"),
    ],
)
def test_contradicting_settings_name_the_field(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HedgeSettings(**fields)
    assert name in str(caught.value)


def test_defaults_form_a_policy() -> None:
    policy = HedgeSettings().policy()
    assert policy.floor <= policy.cap
    assert [level.value for level, _ in policy.levels] == ["pause", "reduce_only", "flatten"]


def test_a_level_can_be_switched_off() -> None:
    settings = HedgeSettings(flatten_drawdown=None)
    assert [level.value for level, _ in settings.policy().levels] == ["pause", "reduce_only"]


def test_balances_come_from_oms_events_not_its_rest_api() -> None:
    settings = HedgeSettings()
    assert settings.balance_events_topic == "oms.balance-events.v1"
    assert "oms_url" not in HedgeSettings.model_fields


def test_the_volatility_comes_from_the_features_unless_ewma_is_named() -> None:
    assert HedgeSettings().volatility_source == "features"
    assert HedgeSettings(volatility_source="ewma").volatility_source == "ewma"
    with pytest.raises(ValidationError) as caught:
        HedgeSettings(volatility_source="guess")
    assert "volatility_source" in str(caught.value)
