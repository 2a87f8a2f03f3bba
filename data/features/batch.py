"""Batch engine: the features of a stored range with polars (same definitions as the stream, same bits).

Input frames (`TRADE_SCHEMA`, `BOOK_SCHEMA`) hold the exact rows of `definitions.trade_row` / `book_row`;
`trades_frame` and `books_frame` build them from those rows, `read_range` from the database. The output has one
row per (venue, symbol, bar) from each symbol's first bar with input to its last, gaps included (a bar without
trades has null trade features; the book carries over from the last state before the bar's end).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple

import polars as pl

from data.features.definitions import (
    BAR_INPUTS,
    BAR_US,
    FEATURES,
    BookRow,
    TradeRow,
    feature_values,
)

KEYS = ["venue", "symbol"]
TRADE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "venue": pl.String,
    "symbol": pl.String,
    "ts_us": pl.Int64,
    "trade_id": pl.String,
    "price": pl.Float64,
    "qty": pl.Int64,
    "notional": pl.Int64,
    "buy": pl.Boolean,
}
BOOK_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "venue": pl.String,
    "symbol": pl.String,
    "ts_us": pl.Int64,
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_qty": pl.Int64,
    "ask_qty": pl.Int64,
    "bid_depth": pl.Int64,
    "ask_depth": pl.Int64,
}
OUTPUT_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "venue": pl.String,
    "symbol": pl.String,
    "bar_us": pl.Int64,
    **dict.fromkeys(FEATURES, pl.Float64),
}


def trades_frame(rows: Iterable[TradeRow]) -> pl.DataFrame:
    """A trade frame from exact trade rows."""
    return pl.DataFrame([astuple(row) for row in rows], schema=TRADE_SCHEMA, orient="row")


def books_frame(rows: Iterable[BookRow]) -> pl.DataFrame:
    """A book frame from book-state rows (in the order the states happened)."""
    return pl.DataFrame([astuple(row) for row in rows], schema=BOOK_SCHEMA, orient="row")


class _PolarsOps:
    """`Ops` on polars expressions (null propagates; division by zero is null).

    Constants are columns of the frame (`constants`), never literals: polars divides by a scalar as a
    multiplication by its reciprocal, which is not the correctly rounded quotient Python computes."""

    def __init__(self) -> None:
        self.constants: dict[str, float] = {}

    def const(self, value: float) -> pl.Expr:
        name = f"__const_{value!r}"
        self.constants[name] = value
        return pl.col(name)

    def flt(self, value: pl.Expr) -> pl.Expr:
        return value.cast(pl.Float64)

    def add(self, a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return a + b

    def sub(self, a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return a - b

    def mul(self, a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return a * b

    def div(self, a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return pl.when(b == 0).then(None).otherwise(a / b)

    def sqrt(self, a: pl.Expr) -> pl.Expr:
        return a.sqrt()

    def abs(self, a: pl.Expr) -> pl.Expr:
        return a.abs()


def _bar_inputs(trades: pl.DataFrame, books: pl.DataFrame) -> pl.DataFrame:
    """One row per (venue, symbol, bar) on a gapless grid, with the exact `BAR_INPUTS`."""
    bar = (pl.col("ts_us") - pl.col("ts_us") % BAR_US).alias("bar_us")
    # Sums are exact integers, so the trades need no order; the close is the trade latest by (time, trade id).
    trade_plan = (
        trades.lazy()
        .with_columns(bar, pl.when(pl.col("buy")).then(pl.col("qty")).otherwise(0).alias("_buy"))
        .group_by([*KEYS, "bar_us"])
        .agg(
            pl.len().cast(pl.Int64).alias("trades"),
            pl.col("_buy").sum().alias("buy_qty"),
            (pl.col("qty").sum() - pl.col("_buy").sum()).alias("sell_qty"),
            pl.col("notional").sum().alias("notional"),
            pl.col("price").sort_by("ts_us", "trade_id").last().alias("close"),
        )
    )
    # Order-flow imbalance between consecutive states of a symbol (its first state contributes 0); a stable
    # sort by time keeps states of equal time in input order, and `over` keeps that order within a symbol.
    prev = {name: pl.col(name).shift(1).over(KEYS) for name in ("bid", "ask", "bid_qty", "ask_qty")}
    zero = pl.lit(0, dtype=pl.Int64)
    e = (
        pl.when(pl.col("bid") >= prev["bid"]).then(pl.col("bid_qty")).otherwise(zero)
        - pl.when(pl.col("bid") <= prev["bid"]).then(prev["bid_qty"]).otherwise(zero)
        - pl.when(pl.col("ask") <= prev["ask"]).then(pl.col("ask_qty")).otherwise(zero)
        + pl.when(pl.col("ask") >= prev["ask"]).then(prev["ask_qty"]).otherwise(zero)
    )
    book_plan = (
        books.lazy()
        .sort("ts_us", maintain_order=True)
        .with_columns(bar, e.fill_null(0).alias("_e"))
        .group_by([*KEYS, "bar_us"], maintain_order=True)
        .agg(
            pl.col("_e").sum().alias("ofi"),
            *(pl.col(name).last() for name in ("bid", "ask", "bid_depth", "ask_depth")),
        )
    )
    trade_bars, book_bars = pl.collect_all([trade_plan, book_plan])
    bounds = (
        pl.concat([trade_bars.select([*KEYS, "bar_us"]), book_bars.select([*KEYS, "bar_us"])])
        .group_by(KEYS)
        .agg(pl.col("bar_us").min().alias("first"), pl.col("bar_us").max().alias("last"))
    )
    grid = bounds.select(*KEYS, pl.int_ranges("first", pl.col("last") + BAR_US, BAR_US).alias("bar_us")).explode(
        "bar_us"
    )
    carried = ("bid", "ask", "bid_depth", "ask_depth")
    return (
        grid.join(trade_bars, on=[*KEYS, "bar_us"], how="left")
        .join(book_bars, on=[*KEYS, "bar_us"], how="left")
        .sort([*KEYS, "bar_us"])
        .with_columns(
            *(pl.col(name).fill_null(0) for name in ("trades", "buy_qty", "sell_qty", "notional", "ofi")),
            *(pl.col(name).forward_fill().over(KEYS) for name in carried),
        )
        .select([*KEYS, "bar_us", *BAR_INPUTS])
    )


def compute(trades: pl.DataFrame, books: pl.DataFrame) -> pl.DataFrame:
    """The features of every bar of the input (schema `OUTPUT_SCHEMA`, sorted by venue, symbol, bar)."""
    bars = _bar_inputs(trades.cast(TRADE_SCHEMA), books.cast(BOOK_SCHEMA))  # type: ignore[arg-type]

    lags: set[tuple[str, int]] = set()

    def get(name: str, lag: int) -> pl.Expr:
        lags.add((name, lag))
        return pl.col(name if lag == 0 else f"{name}@{lag}")

    ops = _PolarsOps()
    values = feature_values(ops, get)
    # The frame is sorted by (venue, symbol, bar): a lag is a plain shift, null across a symbol boundary.
    position = pl.int_range(pl.len()).over(KEYS)
    bars = bars.with_columns(
        pl.when(position >= lag).then(pl.col(name).shift(lag)).alias(f"{name}@{lag}") for name, lag in lags if lag
    )
    # Materialized (a Series, not a literal, which polars keeps as a scalar column) before the features read them.
    bars = bars.with_columns(
        pl.Series(name, [value] * bars.height, dtype=pl.Float64) for name, value in ops.constants.items()
    )
    return bars.lazy().select(*KEYS, "bar_us", *(values[name].alias(name) for name in FEATURES)).collect()
