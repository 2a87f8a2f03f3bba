"""`aether feed binance` refuses bad options with exit code 2 and a line naming the option (before any connection)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from data.replay.cli import app


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--symbols", "btcusdt"], "--symbols: btcusdt"),
        (["--symbols", " , "], "--symbols: none given"),
        (["--symbols", "BTC/USDT", "--url", "http://127.0.0.1:1"], "--url: 'http://127.0.0.1:1' is not a ws://"),
        (["--symbols", "BTC/USDT", "--rest-url", "ftp://x"], "--rest-url: 'ftp://x' is not an http://"),
    ],
)
def test_bad_options_exit_2_naming_the_option(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["binance", *arguments])
    assert result.exit_code == 2
    assert message in result.output
