"""Issue 14, item 1: the TimescaleDB path's statements, parsed by PostgreSQL's own parser (pglast, libpg_query).

No TimescaleDB server is installed here, so this checks syntax and structure only (a continuous aggregate over
`marketdata.trades`, grouped by `time_bucket` on `traded_at`, created WITH NO DATA; a policy; the refresh CALL),
not that the extension accepts them; the plain-PostgreSQL path runs for real in test_marketdata_store.py.
"""

from __future__ import annotations

import pglast
import pytest
from pglast import ast
from pglast.stream import RawStream

from shared.db import marketdata as md


def _outputs(select: ast.SelectStmt) -> list[str]:
    # A target is named by its alias, or (a bare column) by the column.
    return [target.name or target.val.fields[-1].sval for target in select.targetList]


@pytest.mark.parametrize("interval", sorted(md.CANDLE_VIEWS))
def test_continuous_aggregate_statements_parse_as_timescale_needs(interval: str) -> None:
    view = md.CANDLE_VIEWS[interval]
    create, index, policy = (pglast.parse_sql(s)[0].stmt for s in md.create_candle_view_sql(view, timescale=True))
    assert isinstance(create, ast.CreateTableAsStmt)
    assert create.into.rel.schemaname == "marketdata"
    assert create.into.rel.relname == view.name
    assert create.into.skipData  # WITH NO DATA: a continuous aggregate cannot be filled inside a transaction
    options = {(o.defnamespace, o.defname) for o in create.into.options}
    assert ("timescaledb", "continuous") in options
    select = create.query
    assert isinstance(select, ast.SelectStmt)
    assert (select.fromClause[0].schemaname, select.fromClause[0].relname) == ("marketdata", "trades")
    grouped = RawStream()(select.groupClause[-1])
    assert grouped == f"time_bucket(CAST('{view.width}' AS interval), traded_at)"
    assert _outputs(select) == [
        "venue",
        "instrument",
        "bucket",
        "open",
        "close",
        "high",
        "low",
        "volume",
        "notional",
        "trade_count",
    ]
    assert isinstance(index, ast.IndexStmt)
    assert isinstance(policy, ast.SelectStmt)
    refresh = pglast.parse_sql(md.refresh_candle_view_sql(view, timescale=True))[0].stmt
    assert isinstance(refresh, ast.CallStmt)


def test_both_paths_name_the_same_columns() -> None:
    for view in md.CANDLE_VIEWS.values():
        names = []
        for timescale in (True, False):
            select = pglast.parse_sql(md.create_candle_view_sql(view, timescale=timescale)[0])[0].stmt.query
            names.append(sorted(_outputs(select)))
        assert names[0] == names[1] == sorted(c.name for c in md.candle_view(view.interval).columns)
