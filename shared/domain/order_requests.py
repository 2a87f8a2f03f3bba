"""Order requests: what a client asks for, and its validation against the instrument's rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.domain.money import InstrumentSpec, format_decimal
from shared.domain.types import AccountId, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRequest:
    """What a client asked for: quantities in base units, prices in quote per base."""

    account_id: AccountId
    client_order_id: ClientOrderId
    symbol: Symbol
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False
    created_at: datetime


@dataclass(frozen=True, slots=True)
class RequestProblem:
    """One reason a request cannot become an order: a machine-readable code, the field and a sentence."""

    code: str
    field: str
    message: str


LIMIT_PRICED_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT})
TRIGGERED_TYPES = frozenset({OrderType.STOP_LOSS, OrderType.TAKE_PROFIT, OrderType.STOP_LOSS_LIMIT})


def validate_request(request: OrderRequest, spec: InstrumentSpec | None) -> list[RequestProblem]:
    """Every problem of `request` against the instrument's rules (`spec` None: unknown instrument); [] when valid."""
    problems = [*_identity_problems(request), *_instrument_problems(request, spec)]
    checked_spec = spec if spec is not None and spec.symbol == request.symbol else None
    problems += _quantity_problems(request.quantity, checked_spec)
    problems += _price_problems(request, checked_spec)
    problems += _flag_problems(request)
    if not problems and checked_spec is not None and request.limit_price is not None:
        notional = request.quantity * request.limit_price
        if notional < checked_spec.min_notional:
            minimum = format_decimal(checked_spec.min_notional)
            problems.append(
                RequestProblem("below_min_notional", "quantity", f"the order value is below the minimum {minimum}")
            )
    return problems


def _identity_problems(request: OrderRequest) -> list[RequestProblem]:
    problems: list[RequestProblem] = []
    if not request.account_id.strip():
        problems.append(RequestProblem("account_id_required", "account_id", "an account id is required"))
    if not request.client_order_id.strip():
        problems.append(RequestProblem("client_order_id_required", "client_order_id", "a client order id is required"))
    if request.created_at.utcoffset() is None:
        problems.append(RequestProblem("naive_timestamp", "created_at", "created_at must carry a time zone"))
    return problems


def _instrument_problems(request: OrderRequest, spec: InstrumentSpec | None) -> list[RequestProblem]:
    if spec is None:
        return [RequestProblem("unknown_instrument", "symbol", f"{request.symbol} is not a known instrument")]
    if spec.symbol != request.symbol:
        message = f"{request.symbol} does not match the instrument rules given ({spec.symbol})"
        return [RequestProblem("instrument_mismatch", "symbol", message)]
    return []


def _quantity_problems(quantity: Decimal, spec: InstrumentSpec | None) -> list[RequestProblem]:
    if not quantity.is_finite():
        return [RequestProblem("not_a_number", "quantity", "quantity must be a finite number")]
    if quantity <= 0:
        return [RequestProblem("quantity_not_positive", "quantity", "quantity must be positive")]
    if spec is None:
        return []
    if quantity % spec.quantity_increment != 0:
        step = format_decimal(spec.quantity_increment)
        return [RequestProblem("quantity_too_precise", "quantity", f"quantity must be a multiple of {step}")]
    if quantity < spec.min_quantity:
        minimum = format_decimal(spec.min_quantity)
        return [RequestProblem("quantity_below_minimum", "quantity", f"quantity is below the minimum {minimum}")]
    return []


def _price_problems(request: OrderRequest, spec: InstrumentSpec | None) -> list[RequestProblem]:
    problems: list[RequestProblem] = []
    kind = request.type.value
    if request.limit_price is None and request.type in LIMIT_PRICED_TYPES:
        problems.append(RequestProblem("limit_price_required", "limit_price", f"a {kind} order needs a limit price"))
    elif request.limit_price is not None and request.type not in LIMIT_PRICED_TYPES:
        problems.append(RequestProblem("price_not_allowed", "limit_price", f"a {kind} order takes no limit price"))
    elif request.limit_price is not None:
        problems += _price_value_problems("limit_price", request.limit_price, spec)
    if request.trigger_price is None and request.type in TRIGGERED_TYPES:
        problems.append(
            RequestProblem("trigger_price_required", "trigger_price", f"a {kind} order needs a trigger price")
        )
    elif request.trigger_price is not None and request.type not in TRIGGERED_TYPES:
        problems.append(
            RequestProblem("trigger_price_not_allowed", "trigger_price", f"a {kind} order takes no trigger price")
        )
    elif request.trigger_price is not None:
        problems += _price_value_problems("trigger_price", request.trigger_price, spec)
    return problems


def _price_value_problems(name: str, price: Decimal, spec: InstrumentSpec | None) -> list[RequestProblem]:
    if not price.is_finite():
        return [RequestProblem("not_a_number", name, f"{name} must be a finite number")]
    if price <= 0:
        return [RequestProblem("price_not_positive", name, f"{name} must be positive")]
    if spec is not None and price % spec.price_increment != 0:
        step = format_decimal(spec.price_increment)
        return [RequestProblem("price_too_precise", name, f"{name} must be a multiple of {step}")]
    return []


def _flag_problems(request: OrderRequest) -> list[RequestProblem]:
    if not request.post_only:
        return []
    if request.type is not OrderType.LIMIT:
        return [RequestProblem("post_only_requires_limit", "post_only", "post-only applies to limit orders only")]
    if request.time_in_force in {TimeInForce.IOC, TimeInForce.FOK}:
        message = f"a post-only order cannot be {request.time_in_force.value.upper()}: it must be able to rest"
        return [RequestProblem("post_only_with_ioc_or_fok", "time_in_force", message)]
    return []
