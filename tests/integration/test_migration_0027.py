"""Migration 0027 on a database with history: the daily realized PnL is backfilled from the fills (the replay the
daily-loss check used to run, per UTC day), and the venue's earlier deposits get a reference of their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from shared.db.engine import sync_url
from shared.db.migrate import downgrade, upgrade
from shared.domain.risk_limits import FillRecord, realized_pnl_since
from shared.domain.types import OrderSide
from tests.helpers import own_database

ACCOUNT = "acct-0027"
DAY_1 = datetime(2026, 3, 1, 10, tzinfo=UTC)
FILLS = [  # side, quantity, price, fee, filled_at
    ("buy", "2", "100", "0.8", DAY_1),
    ("sell", "1", "90", "0.36", DAY_1 + timedelta(hours=1)),
    ("buy", "1", "80", "0.32", DAY_1 + timedelta(days=1)),
    ("sell", "2", "110", "0.88", DAY_1 + timedelta(days=1, hours=13, minutes=59)),  # 23:59 UTC
]


def test_0027_backfills_the_daily_realized_pnl_and_references_old_deposits(database_url: str) -> None:
    with own_database(database_url, "m0027") as url:
        downgrade(url, "0026_oms_rolling_volume")  # the revision before 0027
        engine = sa.create_engine(sync_url(url))
        try:
            with engine.begin() as conn:
                _history(conn)
            upgrade(url)
            with engine.connect() as conn:
                days = dict(
                    conn.execute(
                        sa.text("SELECT day, realized_pnl FROM oms.daily_realized_pnl WHERE account_id = :a"),
                        {"a": ACCOUNT},
                    ).all()
                )
                reference = conn.scalar(
                    sa.text("SELECT reference FROM paper.deposits WHERE account_id = :a"), {"a": ACCOUNT}
                )
        finally:
            engine.dispose()
    records = [
        FillRecord("BTC/USD", OrderSide(side), Decimal(q), Decimal(p), Decimal(f), at) for side, q, p, f, at in FILLS
    ]
    day_1 = realized_pnl_since(records, DAY_1.replace(hour=0)) - realized_pnl_since(
        records, DAY_1.replace(hour=0) + timedelta(days=1)
    )
    day_2 = realized_pnl_since(records, DAY_1.replace(hour=0) + timedelta(days=1))
    assert days == {DAY_1.date(): day_1, (DAY_1 + timedelta(days=1)).date(): day_2}
    assert day_1 < 0 < day_2
    assert reference is not None
    assert reference.startswith("legacy-")


def _history(conn: sa.Connection) -> None:
    conn.execute(sa.text("INSERT INTO oms.trading_accounts (account_id, venue) VALUES (:a, 'paper')"), {"a": ACCOUNT})
    conn.execute(
        sa.text(
            "INSERT INTO oms.orders (order_id, account_id, client_order_id, request_hash, venue, symbol, side, type,"
            " quantity, time_in_force, post_only, status, version, created_at, updated_at) VALUES ('o-0027', :a,"
            " 'c-0027', 'x', 'paper', 'BTC/USD', 'buy', 'market', 100, 'gtc', false, 'accepted', 1, now(), now())"
        ),
        {"a": ACCOUNT},
    )
    for n, (side, quantity, price, fee, at) in enumerate(FILLS):
        conn.execute(
            sa.text(
                "INSERT INTO oms.fills (venue, trade_id, order_id, account_id, symbol, side, quantity, price, fee,"
                " fee_asset, liquidity, filled_at) VALUES ('paper', :t, 'o-0027', :a, 'BTC/USD', :s, :q, :p, :f,"
                " 'USD', 'taker', :at)"
            ),
            {"t": f"t-0027-{n}", "a": ACCOUNT, "s": side, "q": quantity, "p": price, "f": fee, "at": at},
        )
    conn.execute(sa.text("INSERT INTO paper.accounts (account_id, created_at) VALUES (:a, now())"), {"a": ACCOUNT})
    conn.execute(
        sa.text("INSERT INTO paper.deposits (account_id, asset, amount, created_at) VALUES (:a, 'USD', 1000, now())"),
        {"a": ACCOUNT},
    )
