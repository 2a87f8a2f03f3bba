"""Errors of the OMS; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from typing import ClassVar

from shared.errors import DomainError


class OmsError(DomainError):
    code: ClassVar[str] = "oms_error"


class OrderNotFound(OmsError):
    status_code = 404
    code = "order_not_found"


class AccountNotFound(OmsError):
    status_code = 404
    code = "account_not_found"


class DuplicateClientOrderId(OmsError):
    """The client order id was used before with a different body."""

    status_code = 409
    code = "duplicate_client_order_id"


class OrderNotCancelable(OmsError):
    status_code = 409
    code = "order_not_cancelable"


class NotAPaperAccount(OmsError):
    status_code = 409
    code = "not_a_paper_account"


class VenueNotReadyError(OmsError):
    """The account's venue cannot take its orders now (no venue chosen, missing or unusable keys)."""

    status_code = 503
    code = "venue_not_ready"


class AccountVenueMismatch(OmsError):
    """The account's books were kept on another venue than the one it is now routed to."""

    status_code = 409
    code = "account_venue_mismatch"


class InvalidOrder(OmsError):
    """The request breaks an instrument rule (precision, minimums, price on a market order...)."""

    status_code = 422
    code = "invalid_order"

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message, details={"field": field} if field else None)
        self.code = code  # type: ignore[misc]  # the rule's own code, e.g. "price_not_allowed"


class OrderDenied(OmsError):
    """A pre-trade check refused the order; the order is recorded as DENIED and audited."""

    status_code = 422
    code = "order_denied"

    def __init__(self, code: str, message: str, order_id: str) -> None:
        super().__init__(message, details={"order_id": order_id})
        self.code = code  # type: ignore[misc]  # the check's own code, e.g. "insufficient_balance"


class TradingStateDenied(OrderDenied):
    """The trading state (HALTED, or REDUCING for an order that adds exposure) refused the order: a conflict
    with the account's state, not a bad request."""

    status_code = 409


class MarketDataUnavailable(OmsError):
    status_code = 503
    code = "market_data_unavailable"


class ControlsUnknown(OmsError):
    """The OMS's copy of the trading states, limits and policies cannot say what applies (no snapshot from an
    owner yet, the global state missing, a record that broke its contract, or the database unreachable): the
    order is refused, never guessed."""

    status_code = 503
    code = "controls_unknown"


class DepositReferenceConflict(OmsError):
    """The deposit reference was used before for another asset or amount."""

    status_code = 409
    code = "deposit_reference_conflict"


class DepositRejected(OmsError):
    """The venue refused the deposit; nothing was credited."""

    status_code = 422
    code = "deposit_rejected"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # the venue's own code, e.g. "invalid_amount"


class TransferReferenceConflict(OmsError):
    """The transfer reference was used before for other accounts, asset or amount."""

    status_code = 409
    code = "transfer_reference_conflict"


class TransferRejected(OmsError):
    """The transfer cannot be made (the venue or the ledger refused it); nothing moved."""

    status_code = 422
    code = "transfer_rejected"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # the refusing side's code, e.g. "insufficient_balance"


class WithdrawalReferenceConflict(OmsError):
    """The withdrawal reference was used before for another asset or amount."""

    status_code = 409
    code = "withdrawal_reference_conflict"


class WithdrawalRejected(OmsError):
    """The withdrawal cannot be made (the ledger or the venue refused it); nothing moved."""

    status_code = 422
    code = "withdrawal_rejected"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # the refusing side's code, e.g. "insufficient_balance"


class VenueUnavailable(OmsError):
    """The venue did not answer (or its answer was lost): the operation is recorded and completes on a repeat."""

    status_code = 503
    code = "venue_unavailable"


class CommandUnauthenticated(OmsError):
    """A command without a valid bearer token of a service identity (answered with CommandRejected, audited)."""

    status_code = 401
    code = "unauthenticated"


class CommandForbidden(OmsError):
    """A command whose service identity may not place or cancel orders of that account."""

    status_code = 403
    code = "forbidden"
