"""Request and response models of the backtest service (extra="forbid"); parameters and money as decimal strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from services.backtest.spec import DEFAULT_BALANCES, NO_SCENARIO, RunSettings, RunSpec, Source, scenario_text
from shared.contracts.base import DecimalText, Identifier
from shared.domain.money import format_decimal
from shared.web import IDENTIFIER_MAX_LENGTH, IDENTIFIER_PATTERN, SAFE_TEXT_PATTERN, AssetText, JsonInteger

FileName = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=SAFE_TEXT_PATTERN)]
ParameterText = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[-+0-9.eE]+$")]
ParameterInteger = Annotated[int, Field(ge=-(10**18), le=10**18), JsonInteger]
ParameterValue = Annotated[ParameterText | ParameterInteger, Field(examples=["0.01", 12])]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1), JsonInteger]
# Maps keyed by a pattern: pydantic writes it as `patternProperties` only, which lets any other key through in the
# schema; these name the keys and close the map (as shared.web.SYMBOL_KEYS_SCHEMA does for symbols).
NAME_KEYS_SCHEMA: dict[str, Any] = {
    "propertyNames": {"minLength": 1, "maxLength": IDENTIFIER_MAX_LENGTH, "pattern": IDENTIFIER_PATTERN},
    "additionalProperties": False,
}
ASSET_KEYS_SCHEMA: dict[str, Any] = {
    "propertyNames": {"minLength": 1, "maxLength": 16, "pattern": r"^[A-Z0-9]+$"},
    "additionalProperties": False,
}


class BacktestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RangeIn(BacktestModel):
    """[start, end) of the data to replay; either end open means the whole file on that side."""

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None


class SourceIn(BacktestModel):
    """Files relative to the service's data directory (AETHER_BACKTEST_DATA_DIR)."""

    files: list[FileName] = Field(default_factory=list, max_length=64, description="recorded market data (CSV/Parquet)")
    bar_files: list[FileName] = Field(
        default_factory=list, max_length=64, description="candles: start,symbol,open,high,low,close,volume"
    )


class SettingsIn(BacktestModel):
    """Venue rules, starting balances, bar length and latency of the run."""

    venue: Identifier = "kraken"
    balances: dict[AssetText, DecimalText] = Field(
        default_factory=lambda: {asset: Decimal(amount) for asset, amount in DEFAULT_BALANCES.items()},
        max_length=32,
        json_schema_extra=ASSET_KEYS_SCHEMA,
    )
    bar_seconds: Annotated[int, Field(ge=1, le=86_400), JsonInteger] = 60
    latency_ms: float = Field(default=50.0, ge=0, le=60_000)
    jitter_ms: float = Field(default=50.0, ge=0, le=60_000)
    max_gap_s: float = Field(
        default=600.0, ge=0, le=30 * 86_400, description="a longer hole in market data is an error"
    )
    html_report: bool = Field(default=True, description="false: keep metrics and result JSON only (faster sweeps)")


class RunCreate(BacktestModel):
    """A backtest to run: strategy and parameters, data range and source, stress scenario, seed."""

    strategy: Identifier = Field(examples=["ema_cross"])
    parameters: dict[Identifier, ParameterValue] = Field(
        default_factory=dict, max_length=32, json_schema_extra=NAME_KEYS_SCHEMA
    )
    range: RangeIn = Field(default_factory=RangeIn)
    scenario: Identifier = Field(NO_SCENARIO, examples=["flash_crash"])
    scenario_parameters: dict[Identifier, ParameterValue] = Field(
        default_factory=dict, max_length=16, json_schema_extra=NAME_KEYS_SCHEMA
    )
    seed: Seed = 0
    source: SourceIn
    settings: SettingsIn = Field(default_factory=SettingsIn)

    def to_spec(self, parameters: dict[str, str] | None = None) -> RunSpec:
        """The run spec (with `parameters` instead of this request's, for one point of a sweep)."""
        chosen = parameters if parameters is not None else {k: str(v) for k, v in self.parameters.items()}
        settings = self.settings
        return RunSpec(
            strategy=self.strategy,
            parameters=chosen,
            source=Source(tuple(self.source.files), tuple(self.source.bar_files)),
            start=self.range.start,
            end=self.range.end,
            scenario=scenario_text(self.scenario, {k: str(v) for k, v in self.scenario_parameters.items()}),
            seed=self.seed,
            settings=RunSettings(
                venue=settings.venue,
                balances={asset: format_decimal(amount) for asset, amount in settings.balances.items()},
                bar_seconds=settings.bar_seconds,
                latency_ms=settings.latency_ms,
                jitter_ms=settings.jitter_ms,
                max_gap_s=settings.max_gap_s,
                html_report=settings.html_report,
            ),
        )


class SweepCreate(RunCreate):
    """One run per point of `grid` (the cartesian product), each with `parameters` plus that point."""

    grid: dict[Identifier, Annotated[list[ParameterValue], Field(min_length=1, max_length=1_000)]] = Field(
        min_length=1, max_length=16, examples=[{"fast": [5, 10], "slow": [20, 40]}], json_schema_extra=NAME_KEYS_SCHEMA
    )


class RunAccepted(BacktestModel):
    run_id: str
    status: str


class RunRead(BacktestModel):
    """A run: what was asked and where it stands (`progress` in [0, 1])."""

    run_id: str
    strategy: str
    parameters: dict[str, str]
    start: datetime | None
    end: datetime | None
    scenario: str
    seed: int
    source: dict[str, list[str]]
    status: str = Field(description="queued, running, done or failed")
    progress: float
    error: str | None
    attempts: int
    submitted_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sweep_id: str | None


class CompareRun(BacktestModel):
    run_id: str
    strategy: str
    parameters: dict[str, str]
    seed: int


class CompareRead(BacktestModel):
    """Metrics side by side: each metric's values in the order of `runs`."""

    runs: list[CompareRun]
    metrics: dict[str, list[Any]]


class SweepAccepted(BacktestModel):
    sweep_id: str
    run_ids: list[str]


class SweepRunRead(BacktestModel):
    run_id: str
    parameters: dict[str, str]
    status: str
    progress: float
    error: str | None
    metrics: dict[str, Any] | None


class SweepRead(BacktestModel):
    """A sweep, its grid and each run with its metrics once done."""

    sweep_id: str
    strategy: str
    grid: dict[str, list[str]]
    status: str
    counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None
    runs: list[SweepRunRead]
