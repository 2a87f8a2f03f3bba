"""Debian's Prometheus scrapes every service of the catalog on loopback and finds each target up; the rule files
in the chart's files/prometheus-rules.yaml pass `promtool check rules` and their unit tests (`promtool test rules`,
tests/deploy/prometheus-rules.test.yaml); the Grafana dashboard queries metrics the code exports.

The services are the apps `create_app` builds, served by uvicorn with their lifespans on, against the stack's
PostgreSQL (a migrated database of this module's own), Redis and Kafka: their workers and consumers run, so the
scrapes carry the metrics the alerts read (consumer lag, trading states, reconciliation runs, readiness). The
services share this process and so prometheus_client's registry: each target serves every service's families.
Prometheus comes from apt (installed on first use when root, as the stack installs redis-server), else the test
is skipped saying so.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from ops.stack.common import StackError, binary_or_install
from shared.config import AetherSettings
from shared.service_catalog import SERVICES
from tests.helpers import eventually, own_database
from tests.kit.auth import jwt_settings
from tests.kit.loopback import on_loopback

ROOT = Path(__file__).resolve().parents[2]
RULES = [ROOT / "deploy" / "helm" / "aether-platform" / "files" / "prometheus-rules.yaml"]  # the chart includes it
DASHBOARD = ROOT / "deploy" / "grafana" / "aether.json"
RULE_TESTS = ROOT / "tests" / "deploy" / "prometheus-rules.test.yaml"
# The families the alerts of issue 18 read, exported once the services' workers have run.
ALERTED_FAMILIES = (
    "aether_ready",
    "aether_consumer_lag_records",
    "aether_risk_accounts_in_state",
    "aether_risk_global_trading_state",
    "aether_hedge_open_recommendations",
    "aether_oms_reconciliation_runs_total",
    "aether_oms_reconciliation_last_success_timestamp_seconds",
)


def _binary(name: str) -> str:
    try:
        return binary_or_install(name, ["prometheus"])
    except StackError as exc:
        pytest.skip(f"Debian's prometheus package is needed: {exc}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def scrape_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start: this module keeps its own."""
    with own_database(database_url, "prometheus_scrape") as url:
        yield url


@pytest.fixture
async def service_urls(settings: AetherSettings, scrape_database_url: str) -> AsyncIterator[dict[str, str]]:
    platform = settings.model_copy(
        update={"database_url": SecretStr(scrape_database_url), "log_level": "WARNING", **jwt_settings(private=True)}
    )
    servers = {
        entry.name: on_loopback(importlib.import_module(entry.app_module).create_app(platform), lifespan="on")
        for entry in SERVICES
    }
    # Started and stopped side by side: one after another, the stops alone (consumers leaving their groups)
    # took longer than the whole scrape.
    started = await asyncio.gather(*(server.__aenter__() for server in servers.values()), return_exceptions=True)
    try:
        failed = [outcome for outcome in started if isinstance(outcome, BaseException)]
        if failed:
            raise failed[0]
        yield {name: str(url) for name, url in zip(servers, started, strict=True)}
    finally:
        running = [
            server for server, outcome in zip(servers.values(), started, strict=True) if isinstance(outcome, str)
        ]
        await asyncio.gather(*(server.__aexit__(None, None, None) for server in running))


def test_rule_files_pass_promtool() -> None:
    promtool = _binary("promtool")
    assert all(path.exists() for path in RULES), RULES
    done = subprocess.run([promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool = _binary("promtool")
    done = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _exported_metric_names() -> set[str]:
    names = set()
    for path in [*ROOT.glob("shared/**/*.py"), *ROOT.glob("services/**/*.py"), *ROOT.glob("ops/**/*.py")]:
        names |= set(re.findall(r"\"((?:aether|http)_[a-z_]+)\"", path.read_text(encoding="utf-8")))
    return names


def test_dashboard_and_rules_use_exported_metrics() -> None:
    exported = _exported_metric_names()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ()) if "expr" in target
    ]
    expressions += [rule["expr"] for path in RULES for rule in _rules(path)]
    assert expressions
    for expr in expressions:
        used = {name.removesuffix("_bucket") for name in re.findall(r"\b((?:aether|http)_[a-z_]+)", expr)}
        assert used <= exported, f"{expr}: {sorted(used - exported)} not exported by the code"


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


async def test_prometheus_scrapes_every_service(service_urls: dict[str, str], tmp_path: Path) -> None:
    prometheus = _binary("prometheus")
    port = _free_port()
    targets = [url.removeprefix("http://") for url in service_urls.values()]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "aether", "metrics_path": "/metrics", "static_configs": [{"targets": targets}]}
        ],
        "rule_files": [str(path) for path in RULES],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    process = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def all_up() -> list[dict[str, Any]] | None:
                try:
                    answer = await client.get("/api/v1/targets", params={"state": "active"})
                except httpx.TransportError:
                    return None
                active: list[dict[str, Any]] = answer.json()["data"]["activeTargets"]
                return active if len(active) == len(targets) and all(t["health"] == "up" for t in active) else None

            active = await eventually(all_up, timeout_s=30, interval_s=0.25, message="every scrape target up")
            assert sorted(t["labels"]["instance"] for t in active) == sorted(targets)
            rules = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            assert sum(len(group["rules"]) for group in rules) == sum(len(_rules(path)) for path in RULES)
            up = (await client.get("/api/v1/query", params={"query": 'sum(up{job="aether"})'})).json()
            assert float(up["data"]["result"][0]["value"][1]) == len(targets)

            async def families_scraped() -> set[str] | None:
                query = {"match[]": '{job="aether", __name__=~"aether_.*"}'}
                answer = (await client.get("/api/v1/label/__name__/values", params=query)).json()
                names = set(answer["data"])
                return names if names >= set(ALERTED_FAMILIES) else None

            scraped = await eventually(families_scraped, timeout_s=30, interval_s=0.5, message="alerted families")
            assert set(ALERTED_FAMILIES) <= scraped
    finally:
        process.terminate()
        await process.wait()
