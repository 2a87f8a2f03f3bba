"""Money: exact decimals only, quantization per instrument, decimal strings on the wire."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from shared.domain.money import (
    DecimalString,
    InstrumentSpec,
    MoneyError,
    format_decimal,
    quantize_down,
    quantize_nearest,
    to_decimal,
)

BTC_USD = InstrumentSpec(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    price_increment=Decimal("0.1"),
    quantity_increment=Decimal("0.00000001"),
    min_quantity=Decimal("0.0001"),
    base_step=Decimal("1e-10"),
    quote_step=Decimal("0.0001"),
)


class Quote(BaseModel):
    price: DecimalString


def test_floats_are_refused() -> None:
    with pytest.raises(MoneyError, match="not exact"):
        to_decimal(0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-inf", "abc", "", "1" * 21, "0." + "1" * 19])
def test_non_money_strings_are_refused(bad: str) -> None:
    with pytest.raises(MoneyError):
        to_decimal(bad)


def test_quantize_down_never_rounds_a_quantity_up() -> None:
    assert quantize_down(Decimal("0.123456789"), Decimal("0.00000001")) == Decimal("0.12345678")
    assert quantize_down(Decimal("-1.29"), Decimal("0.1")) == Decimal("-1.2")


def test_quantize_nearest_is_half_even() -> None:
    assert quantize_nearest(Decimal("1.25"), Decimal("0.1")) == Decimal("1.2")
    assert quantize_nearest(Decimal("1.35"), Decimal("0.1")) == Decimal("1.4")


def test_instrument_checks_name_the_rule() -> None:
    assert BTC_USD.price_error(Decimal("50000.05")) == "price must be a multiple of 0.1"
    assert BTC_USD.price_error(Decimal("50000.1")) is None
    assert BTC_USD.quantity_error(Decimal("0")) == "quantity must be positive"
    assert BTC_USD.quantity_error(Decimal("0.00005")) == "quantity is below the minimum 0.0001"
    assert BTC_USD.quantity_error(Decimal("0.000100001")) == "quantity must be a multiple of 0.00000001"
    assert BTC_USD.quantity_error(Decimal("0.5")) is None


def test_wire_type_accepts_strings_and_serializes_to_strings() -> None:
    quote = Quote.model_validate_json('{"price": "65000.50"}')
    assert quote.price == Decimal("65000.50")
    assert quote.model_dump_json() == '{"price":"65000.5"}'


@pytest.mark.parametrize("payload", ['{"price": 65000.5}', '{"price": "6.5e4"}', '{"price": "1.0000000000000000001"}'])
def test_wire_type_refuses_numbers_exponents_and_excess_precision(payload: str) -> None:
    with pytest.raises(ValidationError):
        Quote.model_validate_json(payload)


def test_wire_schema_is_a_string_with_a_pattern() -> None:
    schema = Quote.model_json_schema()["properties"]["price"]
    assert schema["type"] == "string"
    assert "pattern" in schema


@given(
    st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=8, allow_nan=False, allow_infinity=False)
)
def test_format_then_parse_round_trips(value: Decimal) -> None:
    assert to_decimal(format_decimal(value)) == value
