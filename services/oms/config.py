"""Settings of the OMS."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from shared.auth.service_tokens import ServiceIdentitySettings
from shared.config import AetherSettings, load_settings
from shared.events.topics import HITL_CONTROLS, REPORTS_ALLOCATION_EVENTS, RISK_CONTROLS
from shared.venues.binance.adapter import BINANCE_URL
from shared.venues.binance.ws_public import STREAM_URL
from shared.venues.coinbase.adapter import COINBASE_URL
from shared.venues.kraken.adapter import KRAKEN_URL
from shared.venues.kraken.rate_limit import Tier
from shared.venues.kraken.ws_private import AUTH_URL
from shared.venues.paper_config import FeeTierConfig, InstrumentConfig, PaperMarketSettings, default_instruments

__all__ = [
    "VENUES",
    "FeeTierConfig",
    "InstrumentConfig",
    "OmsSettings",
    "default_instruments",
    "get_settings",
    "parse_account_venues",
]

VENUES = ("paper", "kraken", "binance", "coinbase")  # the venues the OMS can trade on
NO_DEFAULT_VENUE = "none"


def parse_account_venues(value: str) -> dict[str, str]:
    """`acct-1=kraken,acct-2=paper` -> {account: venue}; an unknown venue or a malformed entry is a ValueError."""
    routes: dict[str, str] = {}
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        account, sep, venue = (piece.strip() for piece in entry.partition("="))
        if not sep or not account or not venue:
            raise ValueError(f"{entry!r} is not ACCOUNT=VENUE")
        if venue not in VENUES:
            raise ValueError(f"account {account}: unknown venue {venue!r} (one of {', '.join(VENUES)})")
        if routes.get(account, venue) != venue:
            raise ValueError(f"account {account} is routed to two venues")
        routes[account] = venue
    return routes


class OmsSettings(AetherSettings, PaperMarketSettings, ServiceIdentitySettings):
    service_name: str = "oms"
    venue: str = Field(
        default="paper",
        pattern=r"^(paper|kraken|binance|coinbase|none)$",
        description="the venue of accounts without a route in account_venues; `none`: such accounts are refused",
    )
    account_venues: str = Field(
        default="",
        description="per-account venues, `ACCOUNT=VENUE,...` (paper, kraken, binance, coinbase); checked at start-up",
    )
    kraken_url: str = Field(default=KRAKEN_URL, description="Kraken's REST base URL")
    kraken_tier: Tier = Field(default=Tier.STARTER, description="the Kraken account tier (rate-limit counters)")
    kraken_timeout_s: float = Field(default=10.0, gt=0, le=60, description="how long one Kraken call may take")
    kraken_dead_man_timeout_s: int = Field(
        default=60, ge=10, le=86_400, description="CancelAllOrdersAfter timeout, refreshed while the OMS is healthy"
    )
    kraken_maintain_interval_s: float = Field(
        default=15.0, gt=0, description="how often the dead-man switch is refreshed and Kraken fills are synced"
    )
    kraken_ws_auth_url: str | None = Field(
        default=AUTH_URL,
        description="Kraken's private WebSocket v2 (`executions`: fills as they happen); unset: REST sync only",
    )
    kraken_backstop_interval_s: float = Field(
        default=2.0, gt=0, description="how often Kraken fills are synced over REST while the executions stream is down"
    )
    binance_url: str = Field(default=BINANCE_URL, description="Binance spot REST base URL")
    binance_stream_url: str = Field(
        default=STREAM_URL, description="Binance WebSocket streams base URL (user data streams of routed accounts)"
    )
    binance_symbols: str = Field(
        default="", description="symbols reconciled at Binance, `BTC/USDT,...` (empty: every TRADING symbol)"
    )
    binance_timeout_s: float = Field(default=10.0, gt=0, le=60, description="how long one Binance call may take")
    binance_recv_window_ms: int = Field(default=5000, gt=0, le=60_000, description="recvWindow of SIGNED calls")
    binance_maintain_interval_s: float = Field(
        default=15.0, gt=0, description="how often Binance fills are synced and the server time offset measured"
    )
    coinbase_url: str = Field(default=COINBASE_URL, description="Coinbase Advanced Trade's REST base URL")
    coinbase_timeout_s: float = Field(default=10.0, gt=0, le=60, description="how long one Coinbase call may take")
    coinbase_sync_interval_s: float = Field(
        default=15.0, gt=0, description="how often Coinbase fills are reconciled over REST"
    )
    venue_retry_s: float = Field(
        default=30.0, gt=0, description="how often accounts whose venue was not ready are reconciled again"
    )
    account_secrets_dir: Path | None = Field(
        default=None, description="mounted venue keys, <dir>/<account>/api_key|api_secret (before the accounts store)"
    )
    paper_venue_url: str | None = Field(
        default=None,
        description="base URL of the paper venue process (`aether serve paper`); unset: the venue runs in this process",
    )
    paper_venue_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="how long a call to the paper venue process may take (then: ambiguous)"
    )
    paper_venue_token: SecretStr | None = Field(
        default=None,
        description="a fixed bearer token for the paper venue process (development and tests; else the service identity)",
    )
    default_approval_threshold: Decimal | None = Field(
        default=None, gt=0, description="order notional (quote) from which new accounts need director approval"
    )
    market_buy_slippage: Decimal = Field(
        default=Decimal("0.05"), ge=0, le=1, description="buffer on the book's walk price reserved for market buys"
    )
    market_data_max_age_s: float = Field(
        default=30.0,
        gt=0,
        le=3_600,
        description="a market order is denied (stale_market_data) when its symbol's latest book is older than this",
    )
    resolve_after_s: float = Field(default=2.0, gt=0, description="age after which a SUBMITTED order is queried")
    resolver_interval_s: float = Field(default=1.0, gt=0)
    command_token_leeway_s: float = Field(
        default=900.0,
        ge=0,
        le=3_600,
        description="how long after its token expired a command published with it is still honored (consumer lag)",
    )

    @field_validator("account_venues")
    @classmethod
    def _known_venues(cls, value: str) -> str:
        parse_account_venues(value)
        return value

    def venue_routes(self) -> dict[str, str]:
        """The configured account -> venue routes."""
        return parse_account_venues(self.account_venues)

    def default_venue(self) -> str | None:
        """The venue of accounts without a route (None: they are refused)."""
        return None if self.venue == NO_DEFAULT_VENUE else self.venue

    def venues_used(self) -> set[str]:
        """Every venue some account may trade on."""
        default = self.default_venue()
        return {*self.venue_routes().values(), *([default] if default else [])}

    def routed(self) -> bool:
        """Whether accounts are routed (a `VenueRouter`), rather than all on the paper venue as before."""
        return self.venues_used() != {"paper"} or bool(self.venue_routes())

    # The compacted topics of what the OMS enforces (services/oms/controls.py); tests point them at their own.
    risk_controls_topic: str = RISK_CONTROLS
    hitl_controls_topic: str = HITL_CONTROLS
    allocation_events_topic: str = Field(
        default=REPORTS_ALLOCATION_EVENTS, description="the capital allocator's proposals (transfers held for approval)"
    )


@lru_cache(maxsize=1)
def get_settings() -> OmsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(OmsSettings)
