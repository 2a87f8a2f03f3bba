"""Serve a protocol fake in the foreground: `python -m tests.fakes.serve coingecko|kraken [--port N]`.

For trying the backfills without network access (README, "Backfill a range from the fake"); Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from tests.fakes.coingecko import CoinGeckoFake
from tests.fakes.kraken_public import KrakenTradesFake
from tests.fakes.loopback import serve_on_loopback


def main() -> None:
    """Parse the arguments and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("fake", choices=["coingecko", "kraken"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    app = CoinGeckoFake(seed=args.seed).app if args.fake == "coingecko" else KrakenTradesFake(seed=args.seed).app
    with serve_on_loopback(app, args.port) as url:
        print(f"{args.fake} fake on {url}", flush=True)  # noqa: T201 - the one line a user needs
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
