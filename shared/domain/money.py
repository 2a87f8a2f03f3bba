"""Money: Decimal helpers, per-instrument quantization and the decimal-string wire type.

Money and quantities are `Decimal` in the domain and decimal *strings* on the wire; a float never
enters: it cannot represent 0.1 exactly, and an order for 0.30000000000000004 BTC is a bug.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# Enough precision for NUMERIC(38,18) values: 38 significant digits.
MONEY_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
DECIMAL_PATTERN = r"^-?(0|[1-9][0-9]{0,19})(\.[0-9]{1,18})?$"
MAX_FRACTION_DIGITS = 18
MAX_INTEGER_DIGITS = 20
_DECIMAL_RE = re.compile(DECIMAL_PATTERN)


class MoneyError(ValueError):
    """A value that cannot be money: a float, not a number, infinite, or too precise."""


def to_decimal(value: Decimal | str | int) -> Decimal:
    """Parse an exact decimal; floats are refused (pass the string you received instead)."""
    if isinstance(value, bool | float):
        raise MoneyError(f"{type(value).__name__} is not exact: pass a decimal string")
    if isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, int):
        parsed = Decimal(value)
    elif isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError(f"not a decimal number: {value!r}") from None
    else:
        raise MoneyError(f"{type(value).__name__} is not a decimal number")
    if not parsed.is_finite():
        raise MoneyError(f"not a finite number: {value!r}")
    return _check_bounds(parsed)


def _check_bounds(value: Decimal) -> Decimal:
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise MoneyError(f"not a finite number: {value}")
    fraction_digits = max(0, -exponent)
    integer_digits = max(0, len(digits) + exponent)
    if fraction_digits > MAX_FRACTION_DIGITS:
        raise MoneyError(f"more than {MAX_FRACTION_DIGITS} decimal places: {value}")
    if integer_digits > MAX_INTEGER_DIGITS:
        raise MoneyError(f"more than {MAX_INTEGER_DIGITS} integer digits: {value}")
    return value


def quantize_down(value: Decimal, step: Decimal) -> Decimal:
    """Round towards zero to a multiple of `step` (the safe direction for quantities)."""
    if step <= 0:
        raise MoneyError(f"step must be positive: {step}")
    units = (value / step).to_integral_value(rounding=ROUND_DOWN)
    return (units * step).quantize(step, context=MONEY_CONTEXT)


def quantize_nearest(value: Decimal, step: Decimal) -> Decimal:
    """Round half-even to a multiple of `step` (for reporting and fee amounts)."""
    if step <= 0:
        raise MoneyError(f"step must be positive: {step}")
    units = MONEY_CONTEXT.divide(value, step).to_integral_value(rounding=ROUND_HALF_EVEN)
    return (units * step).quantize(step, context=MONEY_CONTEXT)


def is_multiple_of(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent and without trailing zeros ("1E+1" -> "10", "1.500" -> "1.5")."""
    text = format(value.normalize(MONEY_CONTEXT), "f")
    return "0" if text in {"-0", ""} else text


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """Trading rules of one spot instrument: `base/quote`, tick size, lot size and minimums, and the precision the
    venue keeps each asset's balances to (`base_step`, `quote_step`: Kraken's Assets `decimals`, USD 0.0001)."""

    symbol: str
    base: str
    quote: str
    price_increment: Decimal
    quantity_increment: Decimal
    min_quantity: Decimal
    min_notional: Decimal = Decimal(0)
    base_step: Decimal = field(kw_only=True)
    quote_step: Decimal = field(kw_only=True)

    def __post_init__(self) -> None:
        for name in ("price_increment", "quantity_increment", "base_step", "quote_step"):
            if getattr(self, name) <= 0:
                raise MoneyError(f"{self.symbol}: {name} must be positive")
        if self.min_quantity < 0 or self.min_notional < 0:
            raise MoneyError(f"{self.symbol}: minimums must not be negative")
        if not is_multiple_of(self.quantity_increment, self.base_step):
            raise MoneyError(f"{self.symbol}: the lot step must be a multiple of the base asset's precision")

    def trade_cost(self, quantity: Decimal, price: Decimal) -> Decimal:
        """The quote a fill of `quantity` at `price` moves: the product rounded to the nearest `quote_step`, as the
        venue books it (Kraken: 50,123 x 0.00002901 = 1.45406823 USD is booked as 1.4541)."""
        return quantize_nearest(MONEY_CONTEXT.multiply(quantity, price), self.quote_step)

    def quantize_price(self, price: Decimal) -> Decimal:
        return quantize_nearest(price, self.price_increment)

    def quantize_quantity(self, quantity: Decimal) -> Decimal:
        return quantize_down(quantity, self.quantity_increment)

    def price_error(self, price: Decimal) -> str | None:
        """Why `price` is not a valid order price for this instrument, or None."""
        if price <= 0:
            return "price must be positive"
        if not is_multiple_of(price, self.price_increment):
            return f"price must be a multiple of {format_decimal(self.price_increment)}"
        return None

    def quantity_error(self, quantity: Decimal) -> str | None:
        """Why `quantity` is not a valid order quantity for this instrument, or None."""
        if quantity <= 0:
            return "quantity must be positive"
        if not is_multiple_of(quantity, self.quantity_increment):
            return f"quantity must be a multiple of {format_decimal(self.quantity_increment)}"
        if quantity < self.min_quantity:
            return f"quantity is below the minimum {format_decimal(self.min_quantity)}"
        return None


def _parse_wire(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return to_decimal(value)
    if not isinstance(value, str):
        raise MoneyError('must be a decimal string such as "12.50"')
    if not _DECIMAL_RE.match(value):
        raise MoneyError('must be a plain decimal string such as "12.50" (at most 18 decimal places)')
    return to_decimal(value)


# On the wire a decimal string (`"12.50"`), in Python a Decimal. JSON numbers are refused: a client
# that sends 0.1 as a number has already lost precision in its own float.
DecimalString = Annotated[
    Decimal,
    BeforeValidator(_parse_wire),
    PlainSerializer(format_decimal, return_type=str, when_used="always"),
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["12.50"]}),
]


def _positive_fraction_digits() -> str:
    # "0." then up to 18 digits with at least one that is not zero: one branch per count of leading zeros.
    return "|".join(f"0{{{zeros}}}[1-9][0-9]{{0,{17 - zeros}}}" for zeros in range(MAX_FRACTION_DIGITS))


_FRACTION = r"(\.[0-9]{1,18})?"
_ONE = r"1(\.0{1,18})?"
_BELOW_ONE_POSITIVE = rf"0\.({_positive_fraction_digits()})"
NON_NEGATIVE_PATTERN = rf"^(0|[1-9][0-9]{{0,19}}){_FRACTION}$"
POSITIVE_PATTERN = rf"^([1-9][0-9]{{0,19}}{_FRACTION}|{_BELOW_ONE_POSITIVE})$"
FRACTION_PATTERN = rf"^(0{_FRACTION}|{_ONE})$"
BELOW_ONE_PATTERN = rf"^0{_FRACTION}$"
UNIT_THRESHOLD_PATTERN = rf"^({_BELOW_ONE_POSITIVE}|{_ONE})$"
PERCENT_PATTERN = rf"^([1-9]?[0-9]{_FRACTION}|100(\.0{{1,18}})?)$"
OPEN_PERCENT_PATTERN = rf"^([1-9][0-9]?{_FRACTION}|{_BELOW_ONE_POSITIVE})$"
PROFIT_PERCENT_PATTERN = rf"^([1-9][0-9]{{0,2}}{_FRACTION}|1000(\.0{{1,18}})?|{_BELOW_ONE_POSITIVE})$"


def _wire_parser(pattern: str, description: str, example: str) -> BeforeValidator:
    matcher = re.compile(pattern)

    def parse(value: object) -> Decimal:
        if isinstance(value, Decimal):
            value = format_decimal(to_decimal(value))
        if not isinstance(value, str):
            raise MoneyError(f'must be a decimal string such as "{example}"')
        if not matcher.match(value):
            raise MoneyError(f"must be {description}, a plain decimal string such as {example!r}")
        return to_decimal(value)

    return BeforeValidator(parse)


def _wire_schema(pattern: str, description: str, example: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "description": description, "examples": [example]})


_AS_STRING = PlainSerializer(format_decimal, return_type=str, when_used="always")

# Decimal strings that state their range in the schema (the pattern) and enforce exactly that range, so a
# request the OpenAPI document calls valid is never refused by validation, and one it calls invalid never passes.
_POSITIVE = (POSITIVE_PATTERN, "a decimal above 0", "12.50")
PositiveDecimal = Annotated[Decimal, _wire_parser(*_POSITIVE), _AS_STRING, _wire_schema(*_POSITIVE)]
_NON_NEGATIVE = (NON_NEGATIVE_PATTERN, "a decimal of at least 0", "0")
NonNegativeDecimal = Annotated[Decimal, _wire_parser(*_NON_NEGATIVE), _AS_STRING, _wire_schema(*_NON_NEGATIVE)]
_FRACTION_SPEC = (FRACTION_PATTERN, "a fraction from 0 to 1", "0.25")
Fraction = Annotated[Decimal, _wire_parser(*_FRACTION_SPEC), _AS_STRING, _wire_schema(*_FRACTION_SPEC)]
_BELOW_ONE = (BELOW_ONE_PATTERN, "a fraction from 0 up to but excluding 1", "0.05")
BelowOneFraction = Annotated[Decimal, _wire_parser(*_BELOW_ONE), _AS_STRING, _wire_schema(*_BELOW_ONE)]
_THRESHOLD = (UNIT_THRESHOLD_PATTERN, "a fraction above 0 and at most 1", "0.1")
UnitThreshold = Annotated[Decimal, _wire_parser(*_THRESHOLD), _AS_STRING, _wire_schema(*_THRESHOLD)]
_PERCENT = (PERCENT_PATTERN, "a percentage from 0 to 100", "1.5")
Percent = Annotated[Decimal, _wire_parser(*_PERCENT), _AS_STRING, _wire_schema(*_PERCENT)]
_OPEN_PERCENT = (OPEN_PERCENT_PATTERN, "a percentage above 0 and below 100", "2")
OpenPercent = Annotated[Decimal, _wire_parser(*_OPEN_PERCENT), _AS_STRING, _wire_schema(*_OPEN_PERCENT)]
_PROFIT_PERCENT = (PROFIT_PERCENT_PATTERN, "a percentage above 0 and at most 1000", "4")
ProfitPercent = Annotated[Decimal, _wire_parser(*_PROFIT_PERCENT), _AS_STRING, _wire_schema(*_PROFIT_PERCENT)]
