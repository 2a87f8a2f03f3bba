"""Order rules: the status transition table, the commands and where each may start, and the rule errors.

`ORDER_TRANSITIONS` is the issue's table, kept strict; `COMMAND_SOURCES` says in which statuses each command
may start (the aggregate in `shared.domain.orders` checks both). Every broken rule raises an `OrderRuleError`
whose `code` is machine-readable.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from shared.domain.types import TERMINAL_STATUSES, OrderStatus

_S = OrderStatus
_FILLABLE = frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.PENDING_CANCEL, _S.CANCELED, _S.EXPIRED})
ORDER_TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = MappingProxyType(
    {
        _S.INITIALIZED: frozenset({_S.DENIED, _S.PENDING_APPROVAL, _S.SUBMITTED}),
        _S.PENDING_APPROVAL: frozenset({_S.SUBMITTED, _S.DENIED, _S.CANCELED, _S.EXPIRED}),
        _S.SUBMITTED: frozenset({_S.ACCEPTED, _S.REJECTED}),
        _S.ACCEPTED: _FILLABLE,
        _S.PARTIALLY_FILLED: _FILLABLE,
        _S.PENDING_CANCEL: frozenset({_S.CANCELED, _S.PARTIALLY_FILLED, _S.FILLED, _S.ACCEPTED}),
        **{status: frozenset[OrderStatus]() for status in TERMINAL_STATUSES},
    }
)
OPEN_STATUSES = frozenset({_S.ACCEPTED, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL})
IN_FLIGHT_STATUSES = frozenset({_S.SUBMITTED, _S.PENDING_CANCEL})


class OrderCommand(StrEnum):
    DENY = "deny"
    REQUEST_APPROVAL = "request_approval"
    APPROVE = "approve"
    SUBMIT = "submit"
    ACCEPT = "accept"
    REJECT = "reject"
    FILL = "fill"
    REQUEST_CANCEL = "request_cancel"
    CANCEL = "cancel"
    CANCEL_REJECTED = "cancel_rejected"
    EXPIRE = "expire"


_C = OrderCommand
# Where each command may start; the edges it then takes are checked against ORDER_TRANSITIONS in `apply`.
COMMAND_SOURCES: Mapping[OrderCommand, frozenset[OrderStatus]] = MappingProxyType(
    {
        _C.DENY: frozenset({_S.INITIALIZED, _S.PENDING_APPROVAL}),
        _C.REQUEST_APPROVAL: frozenset({_S.INITIALIZED}),
        _C.APPROVE: frozenset({_S.PENDING_APPROVAL}),
        _C.SUBMIT: frozenset({_S.INITIALIZED}),
        _C.ACCEPT: frozenset({_S.SUBMITTED}),
        _C.REJECT: frozenset({_S.SUBMITTED}),
        _C.FILL: frozenset({_S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL}),
        _C.REQUEST_CANCEL: frozenset({_S.ACCEPTED, _S.PARTIALLY_FILLED}),
        _C.CANCEL: frozenset({_S.PENDING_APPROVAL, _S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED, _S.PENDING_CANCEL}),
        _C.CANCEL_REJECTED: frozenset({_S.PENDING_CANCEL}),
        _C.EXPIRE: frozenset({_S.PENDING_APPROVAL, _S.SUBMITTED, _S.ACCEPTED, _S.PARTIALLY_FILLED}),
    }
)


class OrderRuleError(ValueError):
    """An order rule was broken; `code` is machine-readable."""

    code = "order_rule"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IllegalTransition(OrderRuleError):
    """The command is not allowed in the order's current status."""

    code = "illegal_transition"

    def __init__(self, status: OrderStatus, command: OrderCommand) -> None:
        super().__init__(f"cannot {command.value.replace('_', ' ')} an order that is {status.value}")
        self.status = status
        self.command = command


class Overfill(OrderRuleError):
    """A fill would take the filled quantity beyond the order quantity."""

    code = "overfill"


class InvalidFill(OrderRuleError):
    """A fill with a non-positive quantity or price, a negative fee, or a value too precise to store."""

    code = "invalid_fill"


class InvalidEventSequence(OrderRuleError):
    """Events that do not continue this order's history (wrong order, version gap, inconsistent figures)."""

    code = "invalid_event_sequence"


class InvalidEventPayload(OrderRuleError):
    """An event payload that cannot be decoded."""

    code = "invalid_event_payload"
