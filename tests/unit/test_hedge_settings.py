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


PRODUCTION = {
    "env": "production",
    "database_url": "postgresql+psycopg://app:s3cret-x@db:5432/aether?sslmode=require",
    "redis_url": "rediss://redis:6380/0",
    "kafka_security_protocol": "SSL",
    "key_provider": "kms",
    "jwt_public_key": "a-public-key",
}


def test_production_needs_tls_to_the_oms() -> None:
    assert HedgeSettings(**PRODUCTION, oms_url="https://oms:8001").oms_url == "https://oms:8001"
    with pytest.raises(ValidationError) as caught:
        HedgeSettings(**PRODUCTION, oms_url="http://oms:8001")
    assert "AETHER_OMS_URL: production needs https://" in str(caught.value)
