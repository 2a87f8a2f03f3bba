"""`aether ml` refuses bad input with an exit code 2 and a message naming the option (nothing runs)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aether.cli import app

DATA = ["--venue", "paper", "--symbol", "BTC/USD", "--start", "2026-01-01", "--end", "2026-02-01"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["hpo", "--trainer", "lightgbm", *DATA, "--features", "ofi", "--label", "{oops"], "--label: not JSON"),
        (["hpo", "--trainer", "lightgbm", *DATA, "--features", " , ", "--label", "{}"], "--features"),
        (
            ["retrain", "--trainer", "lightgbm", *DATA, "--features", "ofi", "--params", "[1]"],
            "--params: a JSON object",
        ),
        (["retrain", "--trainer", "lightgbm", *DATA, "--features", "ofi", "--params", "{"], "--params: not JSON"),
        (
            ["retrain", "--trainer", "lightgbm", *DATA, "--features", "ofi", "--bars-file", "/nonexistent.csv"],
            "--bars-file",
        ),
        (
            [
                "retrain",
                "--trainer",
                "lightgbm",
                *DATA,
                "--features",
                "ofi",
                "--bars-file",
                "x",
                "--backtest-quantity",
                "0",
            ],
            "--backtest-quantity",
        ),
        (
            ["retrain", "--trainer", "lightgbm", *DATA, "--features", "ofi", "--bars-file", "x", "--bars-from-store"],
            "give one source of candles",
        ),
        (["signals", "--account", "acct-1", "--quantity", "-1"], "--quantity"),
        (["signals", "--account", "acct-1", "--quantity", "lots"], "--quantity"),
    ],
)
def test_bad_input_names_the_option(args: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["ml", *args])
    assert result.exit_code == 2
    assert named in " ".join(result.output.split())
