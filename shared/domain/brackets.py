"""Exit brackets of a long spot position: stop-loss, take-profit, trailing stop and time limit (pure).

One bracket per entry (buy) order: its fills grow the bracket, the fills of its exit orders shrink it.
Every change is `step(bracket, event, now) -> Step(bracket, decisions)`: no I/O, no wall clock, no
randomness, so one recorded stream of events replayed from the same state gives the same decisions.

Spot constraint: the base balance backs ONE resting sell, so at most one exit order is at the venue at a
time (`Bracket.working`). The rule (docs/exits.md):

- stop-loss and trailing stop are always local triggers watched against market prices;
- the take-profit rests as a limit sell at its price while the price is closer to it than to the effective
  stop (max of stop-loss and trailing stop) and further than `swap_band_pct` % of the price from that stop;
  once the price comes within the band of the stop the resting take-profit is canceled and watched locally;
- a trigger (price <= stop, price <= trailing stop, price >= take-profit while it does not rest, clock >=
  time limit) moves the bracket to EXITING: the resting order (if any) is canceled first, and once the OMS
  confirms the cancel (the balance is free again) a market sell for the open quantity is sent;
- when the open quantity reaches zero the bracket closes and whatever still rests is canceled (OCO).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal

from shared.domain.bracket_model import (
    HUNDRED,
    LEG_CODES,
    Bracket,
    BracketError,
    BracketEvent,
    BracketInput,
    BracketStatus,
    CancelExit,
    ClockTick,
    Decision,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitLevels,
    ExitOrder,
    ExitOrderState,
    ExitOutcome,
    LegKind,
    PriceTick,
    Step,
    StopMoved,
    SubmitExit,
    decision_log_line,
    exit_client_order_id,
)
from shared.domain.money import format_decimal

MAX_EXIT_REJECTIONS = 3


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


# --- transitions ----------------------------------------------------------------------------------------------


def open_bracket(
    *,
    bracket_id: str,
    account_id: str,
    symbol: str,
    entry_order_id: str,
    levels: ExitLevels,
    from_policy: bool,
    swap_band_pct: Decimal,
    price_increment: Decimal,
    fill: EntryFilled,
    now: datetime,
) -> Step:
    """Arm a bracket on the first fill of an entry; raise BracketError when a level contradicts the fill price."""
    levels.check(fill.price)
    empty = Bracket(
        bracket_id=bracket_id,
        account_id=account_id,
        symbol=symbol,
        entry_order_id=entry_order_id,
        opened_at=now,
        levels=levels,
        from_policy=from_policy,
        swap_band_pct=swap_band_pct,
        price_increment=price_increment,
        last_price=fill.price,
    )
    armed = BracketEvent(
        bracket_id,
        "BracketArmed",
        {
            "stop_loss": _dec(levels.stop_loss),
            "take_profit": _dec(levels.take_profit),
            "trailing_distance": _dec(levels.trailing_distance),
            "trailing_activation": _dec(levels.trailing_activation),
            "from_policy": str(from_policy).lower(),
        },
    )
    result = step(empty, fill, now)
    return Step(result.bracket, (armed, *result.decisions))


def step(bracket: Bracket, event: BracketInput, now: datetime) -> Step:
    """Apply one input to a bracket at `now`; return the new state and the decisions it implies."""
    if not bracket.is_open and not isinstance(event, ExitFilled):
        return Step(bracket, ())
    decisions: list[Decision] = []
    changed = _apply_input(bracket, event, decisions)
    evaluated = _evaluate(changed, now, decisions)
    if evaluated != bracket or decisions:
        evaluated = replace(evaluated, version=bracket.version + 1)
    return Step(evaluated, tuple(decisions))


def _apply_input(b: Bracket, event: BracketInput, out: list[Decision]) -> Bracket:
    if isinstance(event, PriceTick):
        return _ratchet(replace(b, last_price=event.price), event.price, out)
    if isinstance(event, EntryFilled):
        return _grow(b, event, out)
    if isinstance(event, ExitAccepted):
        return _accepted(b, event)
    if isinstance(event, ExitFilled):
        return _exit_filled(b, event, out)
    if isinstance(event, ExitEnded):
        return _exit_ended(b, event, out)
    if isinstance(event, StopMoved):
        out.append(
            BracketEvent(
                b.bracket_id,
                "StopMoved",
                {"previous": _dec(b.levels.stop_loss), "stop_loss": _dec(event.stop_loss), "actor": event.actor},
            )
        )
        return replace(b, levels=replace(b.levels, stop_loss=event.stop_loss), stop_moved=True)
    return b  # ClockTick


def _accepted(b: Bracket, event: ExitAccepted) -> Bracket:
    working = b.working
    if working is None or working.client_order_id != event.client_order_id:
        return b
    if working.state is not ExitOrderState.PENDING:
        return b
    return replace(b, working=replace(working, state=ExitOrderState.WORKING))


def _ratchet(b: Bracket, price: Decimal, out: list[Decision]) -> Bracket:
    """The trailing stop activates at its activation price and then only moves up (long)."""
    if b.levels.trailing_distance is None or b.status is not BracketStatus.ARMED:
        return b
    if b.trailing_high is None:
        activation = b.levels.trailing_activation
        if activation is not None and price < activation:
            return b
        moved = replace(b, trailing_high=price)
        out.append(BracketEvent(b.bracket_id, "TrailingActivated", {"trailing_stop": _dec(moved.trailing_stop)}))
        return moved
    if price <= b.trailing_high:
        return b
    moved = replace(b, trailing_high=price)
    out.append(
        BracketEvent(
            b.bracket_id,
            "TrailingRatcheted",
            {"previous": _dec(b.trailing_stop), "trailing_stop": _dec(moved.trailing_stop)},
        )
    )
    return moved


def _grow(b: Bracket, fill: EntryFilled, out: list[Decision]) -> Bracket:
    grown = replace(
        b,
        entry_quantity=b.entry_quantity + fill.quantity,
        entry_cost=b.entry_cost + fill.quantity * fill.price,
    )
    out.append(
        BracketEvent(
            b.bracket_id,
            "BracketGrew",
            {"quantity": _dec(fill.quantity), "price": _dec(fill.price), "open_quantity": _dec(grown.open_quantity)},
        )
    )
    return grown


def _exit_filled(b: Bracket, fill: ExitFilled, out: list[Decision]) -> Bracket:
    if not b.owns(fill.client_order_id):
        return b
    working = b.working
    if working is not None and working.client_order_id == fill.client_order_id:
        filled = replace(working, filled=working.filled + fill.quantity)
        working = None if filled.leaves <= 0 else filled
    shrunk = replace(b, exited_quantity=b.exited_quantity + fill.quantity, working=working)
    leg = _leg_of(fill.client_order_id)
    out.append(
        BracketEvent(
            b.bracket_id,
            "ExitFilled",
            {
                "client_order_id": fill.client_order_id,
                "leg": leg,
                "quantity": _dec(fill.quantity),
                "price": _dec(fill.price),
                "open_quantity": _dec(shrunk.open_quantity),
            },
        )
    )
    return shrunk


def _leg_of(client_order_id: str) -> str:
    code = client_order_id.rsplit("-", 1)[-1].rstrip("0123456789")
    return next((leg.value for leg, leg_code in LEG_CODES.items() if leg_code == code), "unknown")


def _exit_ended(b: Bracket, ended: ExitEnded, out: list[Decision]) -> Bracket:
    working = b.working
    if working is None or working.client_order_id != ended.client_order_id:
        return b
    b = replace(b, working=None)
    # A market exit that ends unfilled counts like a rejection, so an illiquid market cannot loop forever.
    refused = ended.outcome in {ExitOutcome.REJECTED, ExitOutcome.DENIED} or working.limit_price is None
    if not refused:
        return b
    b = replace(b, rejections=b.rejections + 1)
    if b.rejections < MAX_EXIT_REJECTIONS:
        return b
    out.append(
        BracketEvent(
            b.bracket_id,
            "ExitFailed",
            {"client_order_id": ended.client_order_id, "rejections": str(b.rejections)},
        )
    )
    return replace(b, status=BracketStatus.FAILED)


def _evaluate(b: Bracket, now: datetime, out: list[Decision]) -> Bracket:
    """Close, exit or keep the take-profit resting, given the last price and the clock."""
    if not b.is_open or b.entry_quantity <= 0:
        return b
    if b.open_quantity <= 0:
        return _close(b, out)
    if b.status is BracketStatus.ARMED:
        trigger = _trigger(b, now)
        if trigger is None:
            return _swap(b, out)
        b = replace(b, status=BracketStatus.EXITING, exit_leg=trigger)
        out.append(
            BracketEvent(
                b.bracket_id,
                "ExitTriggered",
                {"leg": trigger.value, "price": _dec(b.last_price), "stop": _dec(b.effective_stop)},
            )
        )
    return _exit(b, out)


def _trigger(b: Bracket, now: datetime) -> LegKind | None:
    expires_at = b.expires_at
    if expires_at is not None and now >= expires_at:
        return LegKind.TIME_LIMIT
    price = b.last_price
    if price is None:
        return None
    levels = b.levels
    if levels.stop_loss is not None and price <= levels.stop_loss:
        return LegKind.STOP_LOSS
    trailing_stop = b.trailing_stop
    if trailing_stop is not None and price <= trailing_stop:
        return LegKind.TRAILING
    resting_tp = b.working is not None and b.working.leg is LegKind.TAKE_PROFIT
    if levels.take_profit is not None and price >= levels.take_profit and not resting_tp:
        return LegKind.TAKE_PROFIT
    return None


def _submit(b: Bracket, leg: LegKind, limit_price: Decimal | None, out: list[Decision]) -> Bracket:
    sequence = b.sequence + 1
    client_order_id = exit_client_order_id(b.bracket_id, leg, sequence)
    quantity = b.open_quantity
    out.append(SubmitExit(b.bracket_id, b.account_id, b.symbol, client_order_id, leg, quantity, limit_price))
    return replace(b, sequence=sequence, working=ExitOrder(client_order_id, leg, quantity, limit_price))


def _cancel(b: Bracket, reason: str, out: list[Decision]) -> Bracket:
    working = b.working
    if working is None or working.state is ExitOrderState.CANCELING:
        return b
    out.append(CancelExit(b.bracket_id, b.account_id, working.client_order_id, reason))
    return replace(b, working=replace(working, state=ExitOrderState.CANCELING))


def _exit(b: Bracket, out: list[Decision]) -> Bracket:
    """EXITING: free the balance first (cancel the resting take-profit), then one market sell."""
    working = b.working
    if working is None:
        return _submit(b, b.exit_leg or LegKind.STOP_LOSS, None, out)
    if working.limit_price is not None:
        return _cancel(b, f"exit:{b.exit_leg}", out)
    return b  # the market sell is on its way


def _close(b: Bracket, out: list[Decision]) -> Bracket:
    b = _cancel(b, "oco", out)
    out.append(
        BracketEvent(
            b.bracket_id,
            "BracketClosed",
            {"exit_leg": None if b.exit_leg is None else b.exit_leg.value, "exited_quantity": _dec(b.exited_quantity)},
        )
    )
    return replace(b, status=BracketStatus.CLOSED)


def _swap(b: Bracket, out: list[Decision]) -> Bracket:
    """ARMED: rest the take-profit when the price is nearer to it than to the stop, pull it within the band."""
    take_profit = b.levels.take_profit
    price = b.last_price
    if take_profit is None or price is None:
        return b
    stop = b.effective_stop
    near_stop = stop is not None and price - stop <= price * b.swap_band_pct / HUNDRED
    working = b.working
    if working is None:
        nearer_target = stop is None or take_profit - price < price - stop
        if nearer_target and not near_stop:
            return _submit(b, LegKind.TAKE_PROFIT, take_profit, out)
        return b
    if working.state is ExitOrderState.CANCELING:
        return b
    if near_stop:
        return _cancel(b, "swap:near_stop", out)
    if working.leaves != b.open_quantity or working.limit_price != take_profit:
        return _cancel(b, "resize", out)
    return b


def move_stop(bracket: Bracket, stop_loss: Decimal, actor: str, now: datetime) -> Step:
    """Move the stop-loss (callers check the direction and the role); the swap rule is re-applied at once."""
    if not bracket.is_open:
        raise BracketError("stop_loss", f"bracket is {bracket.status.value}")
    if stop_loss <= 0:
        raise BracketError("stop_loss", "must be positive")
    take_profit = bracket.levels.take_profit
    if take_profit is not None and stop_loss >= take_profit:
        raise BracketError("stop_loss", "must be below the take-profit")
    return step(bracket, StopMoved(stop_loss, actor), now)


def rearm(bracket: Bracket, actor: str, now: datetime) -> Step:
    """Put a FAILED bracket back to work (e.g. after trading resumed): rules apply again from the last price."""
    if bracket.status is not BracketStatus.FAILED:
        raise BracketError("rearm", f"only a failed bracket can be re-armed; this one is {bracket.status.value}")
    rearmed = replace(bracket, status=BracketStatus.ARMED, working=None, exit_leg=None, rejections=0)
    event = BracketEvent(bracket.bracket_id, "BracketRearmed", {"actor": actor})
    result = step(rearmed, ClockTick(), now)
    return Step(replace(result.bracket, version=bracket.version + 1), (event, *result.decisions))


def replay(bracket: Bracket, events: list[tuple[BracketInput, datetime]]) -> tuple[Bracket, list[str]]:
    """Apply events in order; return the final state and the decision log (one canonical JSON line each)."""
    log: list[str] = []
    for event, at in events:
        result = step(bracket, event, at)
        bracket = result.bracket
        log.extend(decision_log_line(decision) for decision in result.decisions)
    return bracket, log
