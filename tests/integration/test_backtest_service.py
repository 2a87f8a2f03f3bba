"""The backtest service over REST on real PostgreSQL and real worker processes: submit, watch to done, read the
result and report (the same figures as an in-process run of the same spec), compare, sweeps, the 4xx answers
naming what is wrong, and who may do what."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.backtest.app import create_app
from services.backtest.config import BacktestSettings
from services.backtest.spec import RunSpec, Source, run_backtest, run_stressed
from shared.auth.roles import Role, Scope
from shared.backtest.results import metrics
from shared.config import AetherSettings
from tests.helpers import eventually
from tests.kit.auth import jwt_settings, token
from tests.kit.backtest import T0, write_bar_file

BARS, GAPPED = "bars.csv", "gapped.csv"
OPERATOR = token(Role.OPERATOR, subject="otto")
DIRECTOR = token(Role.DIRECTOR, subject="dora")
VIEWER = token(Role.VIEWER, subject="vic")
RISK = token(Role.RISK, subject="rita")
# A user holding two roles gets both roles' scopes; the same user with a token narrowed to reading cannot submit.
VIEWER_AND_OPERATOR = token(Role.VIEWER, Role.OPERATOR, subject="val")
NARROWED_OPERATOR = token(Role.OPERATOR, subject="otto", scopes=[Scope.BACKTESTS_READ])


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "strategy": "ema_cross",
        "parameters": {"fast": 5, "slow": "20"},
        "source": {"bar_files": [BARS]},
        "seed": 7,
    }
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("backtest-data")
    write_bar_file(directory / BARS, 400, seed=11)
    write_bar_file(directory / GAPPED, 100, seed=12, skip=50)
    (directory.parent / "secret.csv").write_text("outside the data directory\n")
    return directory


@pytest.fixture(scope="module")
async def client(settings: AetherSettings, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    backtest_settings = BacktestSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level"}),
        **jwt_settings(),
        log_level="WARNING",
        backtest_data_dir=data_dir,
        backtest_workers=2,
    )
    app = create_app(backtest_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://backtest") as http,
    ):
        yield http


async def _submit(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str] = OPERATOR) -> str:
    response = await client.post("/v1/backtests", json=body, headers=headers)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def _done(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        run: dict[str, Any] = (await client.get(f"/v1/backtests/{run_id}", headers=VIEWER)).json()
        assert run["status"] != "failed", run
        return run if run["status"] == "done" else None

    return await eventually(probe, timeout_s=60, message=f"backtest {run_id} done")


async def test_a_run_is_watched_to_done_and_its_result_is_the_engine_s(
    client: httpx.AsyncClient, data_dir: Path
) -> None:
    run_id = await _submit(client, _body())
    run = await _done(client, run_id)
    assert (run["progress"], run["attempts"], run["submitted_by"]) == (1.0, 1, "otto")

    result = (await client.get(f"/v1/backtests/{run_id}/result", headers=VIEWER)).json()
    local = run_backtest(RunSpec("ema_cross", {"fast": "5", "slow": "20"}, Source((), (BARS,)), seed=7), data_dir)
    assert result["metrics"] == metrics(local)
    assert len(result["trades"]) == len(local.fills) > 0
    assert result["trades"][0]["price"] == str(local.fills[0].price)

    report = await client.get(f"/v1/backtests/{run_id}/report", headers=VIEWER)
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "<svg" in report.text
    assert result["metrics"]["pnl"] in report.text


async def test_a_stressed_run_stores_its_stress_report(client: httpx.AsyncClient, data_dir: Path) -> None:
    scenario = {"start_min": 60, "minutes": 5}
    run_id = await _submit(
        client, _body(scenario="flash_crash", scenario_parameters=scenario, settings={"html_report": False})
    )
    run = await _done(client, run_id)
    assert run["scenario"] == "flash_crash:minutes=5,start_min=60"
    result = (await client.get(f"/v1/backtests/{run_id}/result", headers=VIEWER)).json()
    spec = RunSpec("ema_cross", {"fast": "5", "slow": "20"}, Source((), (BARS,)), scenario=run["scenario"], seed=7)
    local, stress = run_stressed(spec, data_dir)
    assert result["stress"] == json.loads(json.dumps(stress))
    assert result["metrics"] == metrics(local)
    calm = run_backtest(RunSpec("ema_cross", {"fast": "5", "slow": "20"}, Source((), (BARS,)), seed=7), data_dir)
    assert metrics(local) != metrics(calm)  # the crash changed the run


async def test_two_runs_compare_side_by_side_and_a_sweep_runs_its_grid(client: httpx.AsyncClient) -> None:
    quick = {"html_report": False}
    first = await _submit(client, _body(parameters={"fast": 3, "slow": 10}, settings=quick))
    second = await _submit(client, _body(parameters={"fast": 8, "slow": 30}, settings=quick), headers=DIRECTOR)
    sweep = await client.post(
        "/v1/sweeps",
        json=_body(parameters={"slow": "10"}, grid={"fast": [4, 6]}, settings=quick),  # default fast 12 > 10
        headers=VIEWER_AND_OPERATOR,
    )
    assert sweep.status_code == 202, sweep.text
    sweep_id, sweep_runs = sweep.json()["sweep_id"], sweep.json()["run_ids"]
    assert len(sweep_runs) == 2
    results = [(await _done(client, run_id), run_id) for run_id in (first, second)]

    compared = await client.get(f"/v1/backtests/compare?ids={first},{second}", headers=VIEWER)
    assert compared.status_code == 200, compared.text
    side_by_side = compared.json()
    assert [r["run_id"] for r in side_by_side["runs"]] == [first, second]
    assert [r["parameters"] for r in side_by_side["runs"]] == [{"fast": "3", "slow": "10"}, {"fast": "8", "slow": "30"}]
    for _, run_id in results:
        alone = (await client.get(f"/v1/backtests/{run_id}/result", headers=VIEWER)).json()["metrics"]
        index = [first, second].index(run_id)
        assert {name: values[index] for name, values in side_by_side["metrics"].items()} == alone
    assert side_by_side["metrics"]["pnl"][0] != side_by_side["metrics"]["pnl"][1]

    async def swept() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/v1/sweeps/{sweep_id}", headers=VIEWER)).json()
        return body if body["status"] == "done" else None

    done = await eventually(swept, timeout_s=60, message="sweep done")
    assert done["counts"] == {"done": 2}
    assert done["grid"] == {"fast": ["4", "6"]}
    assert sorted(r["parameters"]["fast"] for r in done["runs"]) == ["4", "6"]
    assert all(r["metrics"]["strategy"] == "ema_cross" for r in done["runs"])
    no_report = await client.get(f"/v1/backtests/{sweep_runs[0]}/report", headers=VIEWER)
    assert no_report.status_code == 409
    assert "without an HTML report" in no_report.json()["error"]["message"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"strategy": "nope"}, "unknown strategy 'nope'"),
        ({"parameters": {"fast": 1}}, "parameter fast=1 is outside its range [2, 500]"),
        ({"parameters": {"fast": 30, "slow": 20}}, "fast=30 must be below slow=20"),
        ({"parameters": {"speed": 3}}, "unknown parameter 'speed'"),
        ({"scenario": "flash_crsh"}, "scenario: unknown scenario 'flash_crsh'"),
        ({"scenario": "flash_crash", "scenario_parameters": {"depth_pct": 300}}, "depth_pct=300 is outside its range"),
        ({"scenario": "flash_crash", "scenario_parameters": {"start_min": 5000}}, "lies outside the recorded range"),
        ({"scenario": "liquidity_drought"}, "does not apply: it changes the order book"),
        ({"scenario": "none", "scenario_parameters": {"minutes": 3}}, "'none' takes no parameters"),
        ({"source": {"bar_files": [GAPPED]}}, "gap from 2026-01-01T00:49:00+00:00"),
        ({"range": {"start": (T0 + timedelta(days=3)).isoformat()}}, "no data in the requested range"),
        ({"range": {"start": T0.isoformat(), "end": T0.isoformat()}}, "range: end"),
        ({"source": {"bar_files": ["../secret.csv"]}}, "source.bar_files[0]: '../secret.csv' is outside the data"),
        ({"source": {"bar_files": ["absent.csv"]}}, "source.bar_files[0]: no file 'absent.csv'"),
        ({"source": {}}, "source: give at least one of files or bar_files"),
        ({"settings": {"balances": {"USD": "-1"}}}, "settings.balances.USD: must be a finite, non-negative decimal"),
    ],
)
async def test_bad_input_is_a_422_naming_what_is_wrong(
    client: httpx.AsyncClient, changes: dict[str, Any], named: str
) -> None:
    response = await client.post("/v1/backtests", json=_body(**changes), headers=OPERATOR)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]


async def test_bad_sweeps_compares_and_lookups_are_4xx(client: httpx.AsyncClient) -> None:
    overlap = await client.post("/v1/sweeps", json=_body(grid={"fast": [3, 4]}), headers=OPERATOR)
    assert overlap.status_code == 422
    assert "grid: fast is both a fixed parameter and a grid axis" in overlap.json()["error"]["message"]
    out_of_range = await client.post(
        "/v1/sweeps", json=_body(parameters={}, grid={"fast": [3, 9000]}), headers=OPERATOR
    )
    assert out_of_range.status_code == 422
    assert "fast=9000 is outside its range" in out_of_range.json()["error"]["message"]
    missing = "0" * 32
    assert (await client.get(f"/v1/backtests/{missing}", headers=VIEWER)).status_code == 404
    assert (await client.get(f"/v1/backtests/{missing}/result", headers=VIEWER)).status_code == 404
    assert (await client.get(f"/v1/sweeps/{missing}", headers=VIEWER)).status_code == 404
    assert (await client.get("/v1/backtests/not-an-id", headers=VIEWER)).status_code == 422
    one = await client.get(f"/v1/backtests/compare?ids={missing}", headers=VIEWER)
    assert one.status_code == 422
    assert "ids: give 2 to 20 distinct run ids" in one.json()["error"]["message"]
    unknown = await client.get(f"/v1/backtests/compare?ids={missing},{'1' * 32}", headers=VIEWER)
    assert unknown.status_code == 404
    assert missing in unknown.json()["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "submit", "read"),
    [
        (OPERATOR, 202, 200),
        (DIRECTOR, 202, 200),
        (VIEWER_AND_OPERATOR, 202, 200),
        (VIEWER, 403, 200),
        (RISK, 403, 200),
        (NARROWED_OPERATOR, 403, 200),
        ({}, 401, 401),
    ],
    ids=["operator", "director", "viewer+operator", "viewer", "risk", "operator-read-scope-only", "anonymous"],
)
async def test_who_may_submit_and_read(
    client: httpx.AsyncClient, headers: dict[str, str], submit: int, read: int
) -> None:
    bad = {"strategy": "nope", "source": {"bar_files": [BARS]}}  # admitted callers get a 422, never a run
    response = await client.post("/v1/backtests", json=bad, headers=headers)
    assert response.status_code == (422 if submit == 202 else submit)
    assert (await client.get(f"/v1/backtests/{'0' * 32}", headers=headers)).status_code == (
        404 if read == 200 else read
    )
