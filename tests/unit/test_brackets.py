"""Exit brackets (shared/domain/brackets.py): trailing ratchet, swap rule, OCO and partial fills, by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from shared.domain.bracket_model import (
    Bracket,
    BracketError,
    BracketEvent,
    BracketStatus,
    CancelExit,
    ClockTick,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitLevels,
    ExitOutcome,
    ExitPolicy,
    LegKind,
    PriceTick,
    Step,
    SubmitExit,
    exit_client_order_id,
)
from shared.domain.brackets import move_stop, open_bracket, rearm, replay, step

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BID = "0123456789abcdef0123456789abcdef"


def _open(levels: ExitLevels | None = None, quantity: str = "1", price: str = "100") -> Step:
    policy = ExitPolicy()
    return open_bracket(
        bracket_id=BID,
        account_id="acc-1",
        symbol="BTC/USD",
        entry_order_id="order-1",
        levels=levels or policy.levels_for(D(price), D("0.1")),
        from_policy=levels is None,
        swap_band_pct=policy.swap_band_pct,
        price_increment=D("0.1"),
        fill=EntryFilled(D(quantity), D(price)),
        now=T0,
    )


def _tick(bracket: Bracket, price: str, seconds: int = 1) -> Step:
    return step(bracket, PriceTick(D(price)), T0 + timedelta(seconds=seconds))


def _commands(result: Step) -> list[SubmitExit | CancelExit]:
    return [d for d in result.decisions if isinstance(d, SubmitExit | CancelExit)]


def _types(result: Step) -> list[str]:
    return [d.type for d in result.decisions if isinstance(d, BracketEvent)]


def test_policy_levels_are_percentages_of_the_entry_on_the_price_grid() -> None:
    levels = ExitPolicy().levels_for(D("60000.05"), D("0.1"))
    # 2 % below 60000.05 = 58800.049 -> down to 58800.0; 4 % above = 62400.052 -> up to 62400.1
    assert levels.stop_loss == D("58800.0")
    assert levels.take_profit == D("62400.1")
    assert levels.trailing_distance == D("900.0")  # 1.5 % = 900.00075, rounded down
    assert levels.trailing_activation == D("60600.1")  # 1 % above = 60600.0505, up


def test_arming_does_not_rest_the_take_profit_while_the_stop_is_nearer() -> None:
    armed = _open()
    b = armed.bracket
    assert (b.levels.stop_loss, b.levels.take_profit) == (D("98.0"), D("104.0"))
    assert _types(armed) == ["BracketArmed", "BracketGrew"]
    assert _commands(armed) == []  # 100 is 2 from the stop and 4 from the target
    assert b.open_quantity == D(1)
    assert b.version == 1


def test_trailing_stop_ratchets_up_only_then_triggers_hand_computed() -> None:
    b = _open().bracket
    r = _tick(b, "100.9")  # below the 101.0 activation price: not active
    assert r.bracket.trailing_stop is None
    r = _tick(r.bracket, "102")  # active: 102 - 1.5
    assert r.bracket.trailing_stop == D("100.5")
    assert _types(r) == ["TrailingActivated"]
    r = _tick(r.bracket, "103")  # ratchets to 101.5; TP is now nearer (1) than the stop (1.5): it rests
    assert r.bracket.trailing_stop == D("101.5")
    assert _types(r) == ["TrailingRatcheted"]
    tp1 = exit_client_order_id(BID, LegKind.TAKE_PROFIT, 1)
    assert _commands(r) == [SubmitExit(BID, "acc-1", "BTC/USD", tp1, LegKind.TAKE_PROFIT, D(1), D("104.0"))]
    r = step(r.bracket, ExitAccepted(tp1), T0)
    r = _tick(r.bracket, "102.5")  # a lower price never lowers the trailing stop
    assert r.bracket.trailing_stop == D("101.5")
    assert _commands(r) == []
    r = _tick(r.bracket, "101.9")  # 0.4 from the stop <= 0.5 % of 101.9 (0.5095): pull the take-profit
    assert _commands(r) == [CancelExit(BID, "acc-1", tp1, "swap:near_stop")]
    r = step(r.bracket, ExitEnded(tp1, ExitOutcome.CANCELED), T0)
    assert r.bracket.working is None
    assert _commands(r) == []
    r = _tick(r.bracket, "101.5")  # touches the trailing stop: market sell of the whole position
    tr2 = exit_client_order_id(BID, LegKind.TRAILING, 2)
    assert _commands(r) == [SubmitExit(BID, "acc-1", "BTC/USD", tr2, LegKind.TRAILING, D(1), None)]
    assert r.bracket.status is BracketStatus.EXITING
    r = step(r.bracket, ExitFilled(tr2, D(1), D("101.4")), T0)
    assert r.bracket.status is BracketStatus.CLOSED
    assert _types(r) == ["ExitFilled", "BracketClosed"]
    assert _commands(r) == []


def test_take_profit_fill_closes_the_bracket_and_drops_the_local_legs() -> None:
    b = _open().bracket
    r = _tick(b, "103")  # trailing active at 103 (stop 101.5), TP nearer: rests
    tp1 = exit_client_order_id(BID, LegKind.TAKE_PROFIT, 1)
    assert [c.client_order_id for c in _commands(r)] == [tp1]
    r = step(r.bracket, ExitFilled(tp1, D(1), D("104.0")), T0)
    assert r.bracket.status is BracketStatus.CLOSED
    assert r.bracket.working is None
    # later prices through the old stops do nothing
    assert _commands(_tick(r.bracket, "90")) == []


def test_stop_trigger_while_take_profit_rests_cancels_it_first_then_sells_the_rest() -> None:
    levels = ExitLevels(stop_loss=D(95), take_profit=D(101))
    r = _open(levels)  # 100: 1 from the target, 5 from the stop: rests at once
    tp1 = exit_client_order_id(BID, LegKind.TAKE_PROFIT, 1)
    assert [c.client_order_id for c in _commands(r)] == [tp1]
    r = step(r.bracket, ExitFilled(tp1, D("0.4"), D(101)), T0)  # partial exit: 0.6 left
    assert r.bracket.open_quantity == D("0.6")
    assert r.bracket.working is not None
    assert r.bracket.working.leaves == D("0.6")
    r = _tick(r.bracket, "94.9")  # gap through the stop
    assert _commands(r) == [CancelExit(BID, "acc-1", tp1, "exit:stop_loss")]
    assert r.bracket.status is BracketStatus.EXITING
    r = _tick(r.bracket, "94")  # no second cancel, no sell while the balance is still reserved
    assert _commands(r) == []
    r = step(r.bracket, ExitEnded(tp1, ExitOutcome.CANCELED), T0)
    sl2 = exit_client_order_id(BID, LegKind.STOP_LOSS, 2)
    assert _commands(r) == [SubmitExit(BID, "acc-1", "BTC/USD", sl2, LegKind.STOP_LOSS, D("0.6"), None)]
    r = step(r.bracket, ExitFilled(sl2, D("0.6"), D(94)), T0)
    assert r.bracket.status is BracketStatus.CLOSED


def test_partial_entry_fills_grow_the_bracket_and_resize_the_resting_take_profit() -> None:
    levels = ExitLevels(stop_loss=D(95), take_profit=D(101))
    r = _open(levels, quantity="0.5")
    tp1 = exit_client_order_id(BID, LegKind.TAKE_PROFIT, 1)
    assert _commands(r)[0] == SubmitExit(BID, "acc-1", "BTC/USD", tp1, LegKind.TAKE_PROFIT, D("0.5"), D(101))
    r = step(r.bracket, EntryFilled(D("0.5"), D(100)), T0)
    assert r.bracket.open_quantity == D(1)
    assert _commands(r) == [CancelExit(BID, "acc-1", tp1, "resize")]
    r = step(r.bracket, ExitEnded(tp1, ExitOutcome.CANCELED), T0)
    tp2 = exit_client_order_id(BID, LegKind.TAKE_PROFIT, 2)
    assert _commands(r) == [SubmitExit(BID, "acc-1", "BTC/USD", tp2, LegKind.TAKE_PROFIT, D(1), D(101))]


def test_take_profit_crossed_while_not_resting_sells_at_market() -> None:
    r = _open(ExitLevels(stop_loss=D(99), take_profit=D(110)))
    assert _commands(r) == []
    r = _tick(r.bracket, "111")
    assert [(c.leg, c.limit_price) for c in _commands(r) if isinstance(c, SubmitExit)] == [(LegKind.TAKE_PROFIT, None)]


def test_time_limit_exits_on_the_clock() -> None:
    r = _open(ExitLevels(stop_loss=D(90), time_limit_s=60))
    assert _commands(step(r.bracket, ClockTick(), T0 + timedelta(seconds=59))) == []
    later = step(r.bracket, ClockTick(), T0 + timedelta(seconds=60))
    assert [c.leg for c in _commands(later) if isinstance(c, SubmitExit)] == [LegKind.TIME_LIMIT]


def test_rejected_market_exits_retry_with_new_ids_then_fail() -> None:
    r = _tick(_open(ExitLevels(stop_loss=D(99))).bracket, "98")
    ids = []
    for _ in range(3):
        (submit,) = [c for c in _commands(r) if isinstance(c, SubmitExit)]
        ids.append(submit.client_order_id)
        r = step(r.bracket, ExitEnded(submit.client_order_id, ExitOutcome.REJECTED), T0)
    assert ids == [exit_client_order_id(BID, LegKind.STOP_LOSS, n) for n in (1, 2, 3)]
    assert r.bracket.status is BracketStatus.FAILED
    assert _types(r) == ["ExitFailed"]
    assert _commands(_tick(r.bracket, "97")) == []  # failed: no more orders until re-armed
    again = rearm(r.bracket, "alice", T0)  # still under the stop: the exit is tried again with the next id
    assert _types(again) == ["BracketRearmed", "ExitTriggered"]
    assert [c.client_order_id for c in _commands(again)] == [exit_client_order_id(BID, LegKind.STOP_LOSS, 4)]
    with pytest.raises(BracketError):
        rearm(again.bracket, "alice", T0)


def test_levels_that_contradict_the_entry_name_the_field() -> None:
    with pytest.raises(BracketError) as error:
        _open(ExitLevels(stop_loss=D(101)))
    assert error.value.field == "stop_loss"
    with pytest.raises(BracketError) as error:
        _open(ExitLevels(take_profit=D(99)))
    assert error.value.field == "take_profit"


def test_moving_the_stop_reapplies_the_rules_at_once() -> None:
    b = _open(ExitLevels(stop_loss=D(95), take_profit=D(110))).bracket
    r = move_stop(b, D("100.2"), "alice", T0)  # last price 100 is below the new stop: exit
    assert _types(r)[0] == "StopMoved"
    assert [c.leg for c in _commands(r) if isinstance(c, SubmitExit)] == [LegKind.STOP_LOSS]
    with pytest.raises(BracketError):
        move_stop(b, D(110), "alice", T0)


def test_replay_is_deterministic() -> None:
    b = _open().bracket
    events = [(PriceTick(D(p)), T0 + timedelta(seconds=i)) for i, p in enumerate(["102", "103", "101.9", "101.4"])]
    first = replay(b, events)
    second = replay(b, events)
    assert first == second
    assert any('"SubmitExit"' in line for line in first[1])
