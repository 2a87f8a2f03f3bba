"""The parity diff: every differing fill named by its position, order of events included; bad CLI input exits 2."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aether.backtest_cli import app
from aether.parity import diff_fills, fill_rows
from shared.backtest.strategy import Fill
from shared.domain.types import Liquidity, OrderSide

AT = datetime(2026, 2, 1, tzinfo=UTC)


def _fill(order: str, price: str, fee: str = "0.1", liquidity: Liquidity = Liquidity.MAKER) -> Fill:
    return Fill(order, "t", "BTC/USD", OrderSide.BUY, Decimal("0.010"), Decimal(price), Decimal(fee), liquidity, AT)


def test_identical_fills_have_no_difference_and_the_live_prefix_is_dropped() -> None:
    backtest = fill_rows([_fill("mm-1", "100"), _fill("mm-2", "101")])
    live = fill_rows([_fill("acc.mm-1", "100.0"), _fill("acc.mm-2", "101")], "acc.")
    assert diff_fills(backtest, live) == []


def test_each_differing_field_and_a_missing_fill_are_reported() -> None:
    backtest = fill_rows([_fill("mm-1", "100"), _fill("mm-2", "101"), _fill("mm-3", "102")])
    live = fill_rows([_fill("mm-1", "100", fee="0.2"), _fill("mm-2", "101", liquidity=Liquidity.TAKER)])
    lines = diff_fills(backtest, live)
    assert [line.split(":")[0] for line in lines] == ["fill 1", "fill 2", "fill 3"]
    assert "fee 0.2" in lines[0]
    assert "taker" in lines[1]
    assert lines[2].endswith("| live -")


def test_the_same_fills_in_another_order_differ() -> None:
    first, second = _fill("mm-1", "100"), _fill("mm-2", "101")
    assert len(diff_fills(fill_rows([first, second]), fill_rows([second, first]))) == 2


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--strategy", "nope"], "unknown strategy 'nope'"),
        (["--strategy", "ema_cross", "--param", "fast=1"], "fast=1 is outside its range"),
        (["--strategy", "ema_cross"], "AETHER_STRATEGY_TOKEN is not set"),
    ],
)
def test_bad_parity_input_exits_2_naming_it(tmp_path: Path, args: list[str], named: str) -> None:
    data = tmp_path / "recorded.csv"
    source = Path(__file__).resolve().parents[2] / "data" / "samples" / "btc_usd_sample.csv"
    data.write_text(source.read_text())
    result = CliRunner().invoke(app, ["parity", "--data", str(data), *args], env={"AETHER_STRATEGY_TOKEN": ""})
    assert result.exit_code == 2
    assert named in " ".join(result.output.split())
