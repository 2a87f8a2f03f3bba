"""Properties of exit brackets under generated prices and OMS answers (hypothesis).

Whatever the prices and however the OMS answers (accepts, partial fills, cancels, rejections): at most one
exit order is out at a time (spot: one balance, one resting sell), no sell is ever sent for more than the
open quantity, the trailing stop never moves down, the open quantity never goes negative, and once closed a
bracket sends nothing more.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.bracket_model import (
    Bracket,
    BracketInput,
    BracketStatus,
    CancelExit,
    EntryFilled,
    ExitAccepted,
    ExitEnded,
    ExitFilled,
    ExitLevels,
    ExitOutcome,
    PriceTick,
    SubmitExit,
)
from shared.domain.brackets import open_bracket, step

T0 = datetime(2026, 1, 1, tzinfo=UTC)
prices = st.integers(min_value=800, max_value=1_200).map(lambda cents: Decimal(cents) / 10)
answers = st.sampled_from(["accept", "fill_part", "fill_all", "cancel", "reject", "entry", "none"])


class Checker:
    """Feeds inputs and checks the invariants after each step."""

    def __init__(self, bracket: Bracket) -> None:
        self.bracket = bracket
        self.out: dict[str, Decimal] = {}  # client id -> leaves, as the OMS sees it
        self.highest_stop: Decimal | None = bracket.trailing_stop

    def feed(self, event: BracketInput, at: datetime) -> None:
        before = self.bracket
        result = step(before, event, at)
        self.bracket = result.bracket
        for decision in result.decisions:
            assert before.is_open or isinstance(event, ExitFilled)
            if isinstance(decision, SubmitExit):
                assert not self.out, "a second exit order while one is still out"
                assert 0 < decision.quantity <= self.bracket.open_quantity
                self.out[decision.client_order_id] = decision.quantity
            if isinstance(decision, CancelExit):
                assert decision.client_order_id in self.out
        trailing = self.bracket.trailing_stop
        if trailing is not None:
            assert self.highest_stop is None or trailing >= self.highest_stop, "trailing stop moved down"
            self.highest_stop = trailing
        assert self.bracket.open_quantity >= 0
        if self.bracket.status is BracketStatus.CLOSED:
            assert self.bracket.open_quantity == 0

    def answer(self, how: str, at: datetime) -> None:
        if how == "entry" and self.bracket.status is BracketStatus.ARMED:
            self.feed(EntryFilled(Decimal("0.5"), Decimal(100)), at)
            return
        if not self.out:
            return
        client_order_id, leaves = next(iter(self.out.items()))
        if how == "accept":
            self.feed(ExitAccepted(client_order_id), at)
        elif how in {"fill_part", "fill_all"}:
            quantity = leaves if how == "fill_all" or leaves <= Decimal("0.1") else Decimal("0.1")
            self.out[client_order_id] = leaves - quantity
            if self.out[client_order_id] == 0:
                del self.out[client_order_id]
            self.feed(ExitFilled(client_order_id, quantity, Decimal(100)), at)
        elif how in {"cancel", "reject"}:
            del self.out[client_order_id]
            outcome = ExitOutcome.CANCELED if how == "cancel" else ExitOutcome.REJECTED
            self.feed(ExitEnded(client_order_id, outcome), at)


@settings(max_examples=300, deadline=None)
@given(
    moves=st.lists(st.tuples(prices, answers), min_size=1, max_size=60),
    take_profit=st.one_of(st.none(), st.integers(101, 115).map(Decimal)),
    stop_loss=st.one_of(st.none(), st.integers(85, 99).map(Decimal)),
    trailing=st.one_of(st.none(), st.integers(1, 8).map(Decimal)),
)
def test_one_exit_out_at_a_time_never_oversold_trailing_only_up(
    moves: list[tuple[Decimal, str]], take_profit: Decimal | None, stop_loss: Decimal | None, trailing: Decimal | None
) -> None:
    levels = ExitLevels(stop_loss=stop_loss or Decimal(90), take_profit=take_profit, trailing_distance=trailing)
    opened = open_bracket(
        bracket_id="f" * 32,
        account_id="p",
        symbol="BTC/USD",
        entry_order_id="e",
        levels=levels,
        from_policy=False,
        swap_band_pct=Decimal("0.5"),
        price_increment=Decimal("0.1"),
        fill=EntryFilled(Decimal(1), Decimal(100)),
        now=T0,
    )
    checker = Checker(opened.bracket)
    for decision in opened.decisions:
        if isinstance(decision, SubmitExit):
            checker.out[decision.client_order_id] = decision.quantity
    for n, (price, how) in enumerate(moves, start=1):
        at = T0 + timedelta(seconds=n)
        checker.feed(PriceTick(price), at)
        checker.answer(how, at)
