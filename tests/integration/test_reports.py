"""The reports service end to end: the hand-computed day (tests/kit/reports.py) published on Kafka as the OMS and
the market-data feed publish it, consumed by the real consumers into `reports.*`, rolled up by
`aether ops refresh-aggregates`, and read back over REST as JSON and CSV, to the last decimal; plus who may see
what and the bad-input answers."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from aether.cli import app as aether_app
from ops.aggregates import RefreshMode, refresh_aggregates
from ops.storage.metrics import LAST_SUCCESS, metric_file
from services.reports.app import create_app
from services.reports.config import ReportsSettings
from services.reports.repository import ReportsRepository
from shared.auth.keys import write_key_pair
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.balances import BalanceChanged
from shared.contracts.cashflows import CashFlowKind, CashFlowRecorded
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork, sessionmaker_for
from shared.domain.pnl import Fill
from shared.domain.types import OrderSide
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.events.topics import OMS_BALANCE_EVENTS, OMS_CASHFLOW_EVENTS, OMS_ORDER_EVENTS
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC
from tests.helpers import eventually, own_database
from tests.kit.auth import jwt_settings, token
from tests.kit.reports import DAY_1, DAY_2, EXPECTED, SYMBOL, at, scenario

D = Decimal
ACCOUNT = f"acct-{uuid.uuid4().hex[:8]}"
OTHER = f"other-{uuid.uuid4().hex[:8]}"
# Two more of the firm's accounts: T1 funded with 500 on day 1 moves 200 to T2 on day 2 (a transfer, not a flow
# of the firm).
T1, T2 = f"t1-{uuid.uuid4().hex[:8]}", f"t2-{uuid.uuid4().hex[:8]}"
FIRM_EXTRA_NAV = D(1_500)  # OTHER's 1,000 + T1's 300 + T2's 200 at the end of day 2
DAYS = {"from": str(DAY_1), "to": str(DAY_2)}
DIRECTOR = token(Role.DIRECTOR, subject="dora")
OPERATOR = token(Role.OPERATOR, subject="otto", accounts=[ACCOUNT])
CSV = {"Accept": "text/csv"}
DAY_3 = DAY_2 + timedelta(days=1)


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "reports") as url:
        yield url


@pytest.fixture(scope="module")
def topics() -> dict[str, str]:
    run = uuid.uuid4().hex[:10]
    platform = [OMS_ORDER_EVENTS, OMS_BALANCE_EVENTS, OMS_CASHFLOW_EVENTS, BOOK_TOPIC, TRADE_TOPIC]
    return {topic: f"test.reports-{index}.{run}.v1" for index, topic in enumerate(platform)}


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture(scope="module")
async def reports(
    settings: AetherSettings,
    module_database_url: str,
    kafka_bootstrap: str,
    topics: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    keys = write_key_pair(tmp_path_factory.mktemp("anchor"))
    reports_settings = ReportsSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(module_database_url),
        **jwt_settings(),
        log_level="WARNING",
        audit_anchor_private_key_file=Path(keys.private_path),
        audit_anchor_public_key_file=Path(keys.public_path),
        order_events_topic=topics[OMS_ORDER_EVENTS],
        balance_events_topic=topics[OMS_BALANCE_EVENTS],
        cashflow_events_topic=topics[OMS_CASHFLOW_EVENTS],
        marketdata_book_topic=topics[BOOK_TOPIC],
        marketdata_trade_topic=topics[TRADE_TOPIC],
        account_time_zones={T1: "America/Los_Angeles"},
    )
    app = create_app(reports_settings)
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="reports-test")
    await producer.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reports") as client,
        ):
            await eventually(lambda: _ready(client), timeout_s=30, message="reports ready")
            prefix = uuid.uuid4().hex[:8]
            published = scenario(ACCOUNT, prefix)
            published.append(_flow(OTHER, CashFlowKind.DEPOSIT, "1000", f"{prefix}-o", at(DAY_1, 11)))
            published.append(_balance(OTHER, "1000", 1, at(DAY_1, 11)))
            published += [
                _flow(T1, CashFlowKind.DEPOSIT, "500", f"{prefix}-t1", at(DAY_1, 9)),
                _balance(T1, "500", 1, at(DAY_1, 9)),
                _flow(T1, CashFlowKind.TRANSFER_OUT, "200", f"{prefix}-tr", at(DAY_2, 10), counterparty=T2),
                _balance(T1, "300", 2, at(DAY_2, 10)),
                _flow(T2, CashFlowKind.TRANSFER_IN, "200", f"{prefix}-tr", at(DAY_2, 10), counterparty=T1),
                _balance(T2, "200", 1, at(DAY_2, 10)),
            ]
            # Redelivery: the partial sell again under the same event id (the inbox drops it).
            sell = next(env for topic, env in published if topic == OMS_ORDER_EVENTS and env.payload["side"] == "sell")
            published.append((OMS_ORDER_EVENTS, sell))
            for topic, envelope in published:
                await producer.send(topics[topic], envelope, key=envelope.aggregate_id)
            await eventually(
                lambda: _all_consumed(client), timeout_s=60, interval_s=0.3, message="the read model has every event"
            )
            yield client
    finally:
        await producer.stop()


def _balance(account: str, total: str, version: int, when: datetime) -> tuple[str, Envelope]:
    message = BalanceChanged(
        account_id=account, asset="USD", total=D(total), available=D(total), reserved=D(0), version=version,
        changed_at=when,
    )  # fmt: skip
    return OMS_BALANCE_EVENTS, new_envelope(message, producer="oms", aggregate_id=account, now=when)


def _flow(
    account: str, kind: CashFlowKind, amount: str, reference: str, when: datetime, counterparty: str | None = None
) -> tuple[str, Envelope]:
    message = CashFlowRecorded(
        account_id=account, kind=kind, asset="USD", amount=D(amount), reference=reference,
        counterparty_account_id=counterparty, occurred_at=when,
    )  # fmt: skip
    return OMS_CASHFLOW_EVENTS, new_envelope(message, producer="oms", aggregate_id=account, now=when)


async def _all_consumed(client: httpx.AsyncClient) -> bool:
    response = await client.get("/reports/pnl/daily_pct", params=DAYS, headers=DIRECTOR)
    if response.status_code != 200:
        return False
    rows = response.json()["rows"]
    # Every event has landed when day 2 ends at the 20:00 mark with both accounts' money.
    return bool(len(rows) == 2 and D(rows[1]["end_nav"]) == EXPECTED.end_nav + FIRM_EXTRA_NAV)


def _csv(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


async def test_the_hand_computed_day_over_rest_and_csv(reports: httpx.AsyncClient) -> None:
    params = {**DAYS, "account_id": ACCOUNT}
    response = await reports.get("/reports/pnl/daily_pct", params=params, headers=OPERATOR)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["scope"], body["accounts"], body["quote"], body["tz"]) == (ACCOUNT, [ACCOUNT], "USD", "UTC")
    day_1, day_2 = body["rows"]
    assert (day_1["day"], D(day_1["end_nav"]), D(day_1["net_flows"]), D(day_1["pnl"])) == (
        str(DAY_1), EXPECTED.day_1_nav, D(10_000), D(0),
    )  # fmt: skip
    assert D(day_1["return_pct"]) == EXPECTED.day_1_return_pct
    expected_day_2 = {
        "day": str(DAY_2), "start_nav": "10000", "end_nav": "12060", "net_flows": "1606", "pnl": "454",
        "return_pct": "3.82240136", "drawdown_pct": "0",
    }  # fmt: skip
    assert day_2 == expected_day_2
    assert body["total_return_pct"] == "3.82240136"
    csv_rows = _csv(await reports.get("/reports/pnl/daily_pct", params=params, headers={**OPERATOR, **CSV}))
    assert csv_rows[1] == expected_day_2

    pnl = (await reports.get("/reports/pnl", params={**params, "from": str(DAY_2)}, headers=OPERATOR)).json()
    (btc,) = pnl["rows"]
    assert (btc["symbol"], btc["position"], btc["average_cost"]) == (SYMBOL, "0.1", "20000")
    assert (btc["realized"], btc["unrealized"], btc["fees"], btc["turnover"], btc["fills"]) == (
        "200", "260", "6", "6200", 2,
    )  # fmt: skip
    assert btc["mark"] == {
        "symbol": SYMBOL, "price": "22600", "source": "book_mid", "observed_at": "2026-01-05T20:00:00Z"
    }  # fmt: skip
    assert (pnl["realized"], pnl["unrealized"], pnl["fees"], pnl["net"]) == ("200", "260", "6", "454")
    (csv_btc,) = _csv(
        await reports.get("/reports/pnl", params={**params, "from": str(DAY_2)}, headers={**OPERATOR, **CSV})
    )
    assert {k: csv_btc[k] for k in ("realized", "unrealized", "fees", "turnover")} == {
        "realized": "200", "unrealized": "260", "fees": "6", "turnover": "6200",
    }  # fmt: skip

    nav = (await reports.get("/reports/nav", params=params, headers=OPERATOR)).json()
    end = nav["rows"][1]
    assert (end["nav"], end["exposure"]) == ("12060", {"BTC": "2260", "USD": "9800"})
    assert [(m["price"], m["source"]) for m in end["marks"]] == [("22600", "book_mid")]
    assert "book_mid" in nav["pricing"]
    nav_csv = _csv(await reports.get("/reports/nav", params=params, headers={**OPERATOR, **CSV}))
    assert (nav_csv[1]["nav"], nav_csv[1]["exposure"]) == ("12060", '{"BTC": "2260", "USD": "9800"}')


async def test_fees_come_from_the_refreshed_rollup(reports: httpx.AsyncClient, module_database_url: str) -> None:
    params = {**DAYS, "account_id": ACCOUNT}
    (first,) = refresh_aggregates(module_database_url)
    assert (first.view, first.mode, first.refreshed) == ("reports.fills_daily", RefreshMode.MATERIALIZED, True)
    assert first.rows == 1
    (again,) = refresh_aggregates(module_database_url)
    assert (again.refreshed, again.rows) == (False, 1)  # nothing new: nothing refreshed
    body = (await reports.get("/reports/fees", params=params, headers=OPERATOR)).json()
    assert body["refreshed_at"] is not None
    assert body["rows"] == [
        {"day": str(DAY_2), "account_id": ACCOUNT, "symbol": SYMBOL, "fees": "6", "turnover": "6200", "fills": 2}
    ]
    assert (body["fees"], body["turnover"]) == ("6", "6200")
    (row,) = _csv(await reports.get("/reports/fees", params=params, headers={**OPERATOR, **CSV}))
    assert (row["fees"], row["turnover"], row["fills"]) == ("6", "6200", "2")
    quiet_day = {"account_id": ACCOUNT, "from": str(DAY_1), "to": str(DAY_1)}
    empty = await reports.get("/reports/fees", params=quiet_day, headers={**OPERATOR, **CSV})
    assert empty.text == "day,account_id,symbol,fees,turnover,fills\n"  # the header alone

    # A fill stored after the refresh makes the next one refresh again (and only then).
    engine = create_async_engine(module_database_url)
    try:
        async with UnitOfWork(sessionmaker_for(engine)) as uow:
            late = Fill(SYMBOL, OrderSide.BUY, D(1), D(100), D("0.5"), at(DAY_3, 1))
            assert await ReportsRepository(uow.session).add_fill(OTHER, "late-order", "late-trade", late)
    finally:
        await engine.dispose()
    (third,) = refresh_aggregates(module_database_url)
    assert (third.refreshed, third.rows) == (True, 2)
    assert third.window_start is not None
    assert third.window_start <= at(DAY_3, 1)
    late_day = {"account_id": OTHER, "from": str(DAY_3), "to": str(DAY_3)}
    assert (await reports.get("/reports/fees", params=late_day, headers=DIRECTOR)).json()["fees"] == "0.5"


def test_aether_ops_refresh_aggregates_names_each_rollup_and_writes_its_metric(
    module_database_url: str, tmp_path: Path
) -> None:
    env = {"AETHER_DATABASE_URL": module_database_url, "AETHER_OPS_METRICS_DIR": str(tmp_path)}
    done = CliRunner().invoke(aether_app, ["ops", "refresh-aggregates"], env=env)
    assert done.exit_code == 0, done.output
    assert "reports.fills_daily (materialized_view):" in done.output
    assert f'{LAST_SUCCESS}{{job="refresh_aggregates"}}' in metric_file(tmp_path, "refresh_aggregates").read_text()


async def test_the_firm_view_is_for_directors_and_sums_the_accounts(reports: httpx.AsyncClient) -> None:
    firm = (await reports.get("/reports/nav", params=DAYS, headers=DIRECTOR)).json()
    assert firm["scope"] == "firm"
    assert {ACCOUNT, OTHER} <= set(firm["accounts"])
    assert D(firm["rows"][1]["nav"]) == EXPECTED.end_nav + FIRM_EXTRA_NAV
    # The transfer between T1 and T2 is no flow of the firm: the firm's day 2 has the scenario's flows and PnL.
    firm_days = (await reports.get("/reports/pnl/daily_pct", params=DAYS, headers=DIRECTOR)).json()["rows"]
    assert (firm_days[1]["net_flows"], firm_days[1]["pnl"]) == (str(EXPECTED.net_flows), str(EXPECTED.pnl))
    day_2 = {"from": str(DAY_2), "to": str(DAY_2)}
    firm_pnl = (await reports.get("/reports/pnl", params=day_2, headers=DIRECTOR)).json()
    assert (firm_pnl["realized"], firm_pnl["unrealized"], firm_pnl["fees"], firm_pnl["net"]) == (
        "200",
        "260",
        "6",
        "454",
    )
    # For T1 alone it is money out, not a loss.
    t1 = (await reports.get("/reports/pnl/daily_pct", params={**DAYS, "account_id": T1}, headers=DIRECTOR)).json()
    assert t1["tz"] == "America/Los_Angeles"  # its days are cut in its own zone (AETHER_ACCOUNT_TIME_ZONES)
    utc = {**DAYS, "account_id": T1, "tz": "UTC"}
    assert (await reports.get("/reports/pnl/daily_pct", params=utc, headers=DIRECTOR)).json()["tz"] == "UTC"
    assert {k: t1["rows"][1][k] for k in ("start_nav", "end_nav", "net_flows", "pnl", "return_pct")} == {
        "start_nav": "500", "end_nav": "300", "net_flows": "-200", "pnl": "0", "return_pct": "0",
    }  # fmt: skip
    refused = await reports.get("/reports/nav", params=DAYS, headers=OPERATOR)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "firm_view_forbidden")
    foreign = await reports.get("/reports/nav", params={**DAYS, "account_id": OTHER}, headers=OPERATOR)
    assert foreign.status_code == 403
    page = await reports.get("/reports/ui/nav", params=DAYS, headers=DIRECTOR)
    assert page.status_code == 200
    assert page.text.count("<polyline") == 2
    assert "NAV and drawdown: firm" in page.text
    assert "http" not in page.text.split("<body>")[1]  # nothing loaded from elsewhere
    assert (await reports.get("/reports/ui/nav", params=DAYS, headers=OPERATOR)).status_code == 403


def test_an_unknown_account_time_zone_is_refused_at_start(settings: AetherSettings) -> None:
    fields = settings.model_dump(exclude={"service_name", "log_level"})
    with pytest.raises(ValidationError, match="acct-x: unknown time zone 'Mars/Olympus'"):
        ReportsSettings(**fields, account_time_zones={"acct-x": "Mars/Olympus"})


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"account_id": "nobody-here", **DAYS}, 404, "account_id"),
        ({"account_id": ACCOUNT, "from": str(DAY_2), "to": str(DAY_1)}, 422, "from"),
        ({"account_id": ACCOUNT, "from": "2020-01-01", "to": "2026-01-01"}, 422, "to"),
        ({"account_id": ACCOUNT, **DAYS, "tz": "Mars/Olympus"}, 422, "tz"),
        ({"account_id": ACCOUNT, "from": "yesterday", "to": str(DAY_2)}, 422, "from"),
    ],
)
async def test_bad_input_is_a_clear_4xx_naming_the_field(
    reports: httpx.AsyncClient, params: dict[str, str], status: int, field: str
) -> None:
    response = await reports.get("/reports/pnl/daily_pct", params=params, headers=DIRECTOR)
    assert response.status_code == status, response.text
    assert field in response.text
