"""Debian's Prometheus scrapes every service of the catalog on loopback and finds each target up; the rule files
in the chart's files/prometheus-rules.yaml pass `promtool check rules`; the Grafana dashboard queries metrics the code exports.

The services are the apps `create_app` builds, served by uvicorn; /metrics needs no backend, so their lifespans
stay off here (the order path's own tests run them with PostgreSQL, Redis and Kafka). Prometheus comes from apt
(installed on first use when root, as the stack installs redis-server), else the test is skipped saying so.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aether.openapi import _build_settings
from ops.stack.common import StackError, binary_or_install
from shared.service_catalog import SERVICES
from tests.helpers import eventually
from tests.kit.loopback import on_loopback

ROOT = Path(__file__).resolve().parents[2]
RULES = [ROOT / "deploy" / "helm" / "aether-platform" / "files" / "prometheus-rules.yaml"]  # the chart includes it
DASHBOARD = ROOT / "deploy" / "grafana" / "aether.json"


def _binary(name: str) -> str:
    try:
        return binary_or_install(name, ["prometheus"])
    except StackError as exc:
        pytest.skip(f"Debian's prometheus package is needed: {exc}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def service_urls() -> AsyncIterator[dict[str, str]]:
    settings = _build_settings()
    async with AsyncExitStack() as stack:
        urls = {}
        for entry in SERVICES:
            app = importlib.import_module(entry.app_module).create_app(settings)
            urls[entry.name] = await stack.enter_async_context(on_loopback(app))
        yield urls


def test_rule_files_pass_promtool() -> None:
    promtool = _binary("promtool")
    assert all(path.exists() for path in RULES), RULES
    done = subprocess.run([promtool, "check", "rules", *map(str, RULES)], capture_output=True, text=True, check=False)
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
    finally:
        process.terminate()
        await process.wait()
