"""Asset and instrument precision per venue, as data: the one place the platform's numbers come from.

Copied from the venue's public reference endpoints (Kraken: `GET /0/public/Assets` and `/0/public/AssetPairs`, see
docs/venues.md for the sources and the date). `InstrumentSpec`s are built from here by the OMS settings and the
paper venue; change a figure here and both follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from shared.domain.money import InstrumentSpec


class UnknownInstrument(KeyError):
    """A venue or a symbol this table does not list."""


def _step(decimals: int) -> Decimal:
    return Decimal(1).scaleb(-decimals)


@dataclass(frozen=True, slots=True)
class AssetPrecision:
    """Kraken Assets: `decimals` (what balances and ledger amounts are kept to), `display_decimals` (what UIs show)."""

    decimals: int
    display_decimals: int

    @property
    def step(self) -> Decimal:
        return _step(self.decimals)


@dataclass(frozen=True, slots=True)
class PairRules:
    """Kraken AssetPairs: tick size (`pair_decimals`), lot step (`lot_decimals`), `ordermin` (base) and `costmin`
    (quote). `cost_decimals` is the precision of the order cost the venue reports."""

    base: str
    quote: str
    tick_size: Decimal
    lot_decimals: int
    cost_decimals: int
    ordermin: Decimal
    costmin: Decimal


@dataclass(frozen=True, slots=True)
class VenuePrecision:
    """The assets and pairs of one venue."""

    assets: Mapping[str, AssetPrecision]
    pairs: Mapping[str, PairRules]

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", MappingProxyType(dict(self.assets)))
        object.__setattr__(self, "pairs", MappingProxyType(dict(self.pairs)))

    def spec(self, symbol: str) -> InstrumentSpec:
        """The trading rules of `symbol` on this venue."""
        rules = self.pairs.get(symbol)
        if rules is None:
            raise UnknownInstrument(symbol)
        return InstrumentSpec(
            symbol=symbol,
            base=rules.base,
            quote=rules.quote,
            price_increment=rules.tick_size,
            quantity_increment=_step(rules.lot_decimals),
            min_quantity=rules.ordermin,
            min_notional=rules.costmin,
            base_step=self.assets[rules.base].step,
            quote_step=self.assets[rules.quote].step,
        )

    def specs(self) -> dict[str, InstrumentSpec]:
        """Every listed instrument's rules, by symbol."""
        return {symbol: self.spec(symbol) for symbol in self.pairs}


# Kraken spot, checked 2026-09 (docs/venues.md): Assets XXBT/XETH decimals 10, ZUSD decimals 4; AssetPairs XXBTZUSD
# and XETHZUSD. Kraken names bitcoin XBT; the platform's symbols use BTC.
KRAKEN = VenuePrecision(
    assets={
        "BTC": AssetPrecision(decimals=10, display_decimals=5),
        "ETH": AssetPrecision(decimals=10, display_decimals=5),
        "USD": AssetPrecision(decimals=4, display_decimals=2),
    },
    pairs={
        "BTC/USD": PairRules(
            "BTC",
            "USD",
            Decimal("0.1"),
            lot_decimals=8,
            cost_decimals=5,
            ordermin=Decimal("0.00005"),
            costmin=Decimal("0.5"),
        ),
        "ETH/USD": PairRules(
            "ETH",
            "USD",
            Decimal("0.01"),
            lot_decimals=8,
            cost_decimals=5,
            ordermin=Decimal("0.002"),
            costmin=Decimal("0.5"),
        ),
    },
)

# The paper venue stands for Kraken: it trades under Kraken's precision.
VENUES: Mapping[str, VenuePrecision] = MappingProxyType({"kraken": KRAKEN, "paper": KRAKEN})


def venue_precision(venue: str) -> VenuePrecision:
    """The precision table of `venue` (an unknown venue raises `UnknownInstrument`)."""
    table = VENUES.get(venue)
    if table is None:
        raise UnknownInstrument(venue)
    return table
