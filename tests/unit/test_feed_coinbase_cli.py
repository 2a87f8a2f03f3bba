"""`aether feed coinbase` refuses bad options with exit code 2 and a line naming the option (before any connection)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from data.replay.cli import app


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--symbols", "btc-usd"], "--symbols: btc/usd"),
        (["--symbols", " , "], "--symbols: none given"),
        (["--symbols", "BTC-USD", "--url", "http://127.0.0.1:1"], "--url: 'http://127.0.0.1:1' is not a ws://"),
    ],
)
def test_bad_options_exit_2_naming_the_option(arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["coinbase", *arguments])
    assert result.exit_code == 2
    assert message in result.output
