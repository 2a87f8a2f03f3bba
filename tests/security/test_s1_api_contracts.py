"""S1: the APIs keep their contract.

schemathesis (all checks, fixed seed, coverage phase included) against the OpenAPI document of every service
(`services/<name>/app.py` with `create_app`, found on disk, so a new service is covered without editing this
file). Each app runs in-process over ASGI with its lifespan, on real PostgreSQL, Redis and Kafka, with a token
that reaches every route; schemathesis also sends each operation without the token (`ignored_auth`,
`missing_required_header`), which must answer 401.

A request the schema calls valid may still be refused by a business rule (an unknown instrument, an
insufficient balance: 404/409/422 with a domain error code), but never by request validation: a 422
`validation_error` for schema-valid data means the schema promises what the handler refuses.

The services run side by side in `AETHER_S1_WORKERS` processes (default 2, the CI machine's cores): each app and
schemathesis share one event loop and one core in-process, so one service at a time left the second core idle.

`AETHER_S1_CASES` (default 2000) is the number of generated cases each service must reach. The target applies
to a service with at least one operation that takes a parameter or a body ("open"): there the generated inputs
are unbounded. A service whose every operation takes neither (analytics and backtest: only `GET /<name>/info`)
has a handful of distinct requests (with and without the token, with other methods, with odd headers);
schemathesis stops when it has sent them, and the record says so with the real count instead of a target.
"""

from __future__ import annotations

import importlib
import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.python.asgi import shutdown_lifespans

from shared.auth.roles import Role
from shared.config import AetherSettings
from tests.helpers import own_database
from tests.reliability.conftest import RecordWriter
from tests.security.test_s2_access_matrix import REDIS_DB, bearer_headers, service_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES_PER_SERVICE = int(os.environ.get("AETHER_S1_CASES", "2000"))
# A comma-separated subset of services to run (for working on one service); every service by default.
ONLY_SERVICES = frozenset(filter(None, os.environ.get("AETHER_S1_SERVICES", "").split(",")))
WORKERS = int(os.environ.get("AETHER_S1_WORKERS", "2"))
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
# Cases per unit of `max-examples` seen per open operation (positive and negative modes, the coverage phase):
# 1.1 to 2.1 measured (risk 2.1, hedge 1.9, reports 1.1): the first pass counts 1.6, later passes the ratio seen.
CASES_PER_EXAMPLE = 1.6
# A service short of the target after a pass (reports: 1.13 cases per example) gets another pass, with a new seed,
# aimed at the shortfall with the ratio the pass showed; a pass that gives next to nothing still moves on.
MAX_PASSES = 4
MIN_CASES_PER_EXAMPLE = 0.25
# The first pass aims at this share of the target: the ratio varies by service, and a first pass aimed at all of it
# overshot by 20 to 58 % (hitl 3,155 cases for 2,000: 12 minutes of the suite for S1); later passes top it up.
FIRST_PASS_SHARE = 0.75
SERVER_ERROR_CHECKS = frozenset({"not_a_server_error"})
# What the API says it does and does not do; the rest (ignored_auth, unsupported_method...) are counted apart.
SCHEMA_CHECKS = frozenset(
    {
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "schema_valid_request_not_refused_by_validation",
        "allow_header_conformance",
    }
)


def discover_services() -> list[str]:
    """Every `services/<name>/app.py` that defines `create_app`."""
    return sorted(
        path.parent.name
        for path in (REPO_ROOT / "services").glob("*/app.py")
        if "def create_app(" in path.read_text(encoding="utf-8")
        and (not ONLY_SERVICES or path.parent.name in ONLY_SERVICES)
    )


@schemathesis.check
def schema_valid_request_not_refused_by_validation(ctx: Any, response: Any, case: Any) -> bool | None:
    """A positive (schema-valid) case must not fail the handler's request validation."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    if code == "validation_error":
        raise AssertionError(f"schema-valid request refused by request validation: {response.content[:300]!r}")
    return None


def open_operations(document: Mapping[str, Any]) -> int:
    """Operations of an OpenAPI document that take a parameter or a request body (the bearer token aside)."""
    count = 0
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method in HTTP_METHODS and (
                item.get("parameters") or operation.get("parameters") or "requestBody" in operation
            ):
                count += 1
    return count


@dataclass
class ServiceResult:
    service: str
    operations: int = 0
    open_operations: int = 0
    cases: int = 0
    unauthenticated_cases: int = 0
    server_errors: int = 0
    schema_violations: int = 0
    other_failures: int = 0
    errors: list[str] = field(default_factory=list)
    failures: dict[str, set[str]] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    passes: int = 0

    @property
    def cases_target(self) -> int | None:
        """The cases this service must reach; None where no operation takes an input (the space is finite)."""
        return CASES_PER_SERVICE if self.open_operations else None

    def record(self) -> dict[str, Any]:
        target_note = (
            f"{self.open_operations} of {self.operations} operations take parameters or a body: the target applies"
            if self.open_operations
            else f"no operation takes a parameter or a body: schemathesis exhausts the {self.cases} distinct"
            " requests it can build (with and without the token, other methods, odd headers); no target applies"
        )
        return {
            "operations": self.operations,
            "open_operations": self.open_operations,
            "cases_target": self.cases_target,
            "cases_target_note": target_note,
            "cases": self.cases,
            "unauthenticated_cases": self.unauthenticated_cases,
            "server_errors": self.server_errors,
            "schema_violations": self.schema_violations,
            "other_failures": self.other_failures,
            "errors": self.errors[:10],
            "failures": {name: sorted(where)[:10] for name, where in sorted(self.failures.items())},
            "samples": dict(sorted(self.samples.items())[:20]),
            "passes": self.passes,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def _config(seed: int, max_examples: int, headers: dict[str, str]) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": seed,
            "workers": 1,
            "headers": headers,
            "suppress-health-check": ["all"],
            "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
            "checks": {
                "enabled": True,
                # Business refusals of well-formed requests (404, 409, 422 with a domain code) are outcomes; a
                # request-validation 422 is caught by `schema_valid_request_not_refused_by_validation`.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]},
            },
            "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        }
    )


def _classify(result: ServiceResult, label: str, check: str, sample: str) -> None:
    if check in SERVER_ERROR_CHECKS:
        result.server_errors += 1
    elif check in SCHEMA_CHECKS:
        result.schema_violations += 1
    else:
        result.other_failures += 1
    result.failures.setdefault(check, set()).add(label)
    result.samples.setdefault(f"{check} {label}", sample[:600])


def _count(result: ServiceResult, event: events.ScenarioFinished) -> None:
    recorder = event.recorder
    result.cases += len(recorder.cases)
    for case_id, node in recorder.cases.items():
        headers: Mapping[str, Any] = node.value.headers or {}
        if not any(name.lower() == "authorization" for name in headers):
            result.unauthenticated_cases += 1
        for check in recorder.checks.get(case_id, []):
            if check.status == Status.FAILURE:
                info = check.failure_info
                sample = "" if info is None else f"{info.failure.title}: {info.failure.message} | {info.code_sample}"
                _classify(result, event.label or "?", check.name, sample)


def _run_service(service: str, settings: AetherSettings, database_url: str, seed: int) -> ServiceResult:
    app = importlib.import_module(f"services.{service}.app").create_app(
        service_settings(service, settings, database_url)
    )
    every_role = tuple(Role)
    headers = bearer_headers(*every_role, accounts=("*",), subject="s1-schemathesis", ttl_s=3600)
    result = ServiceResult(service)
    started = time.monotonic()
    try:
        probe = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(seed, 1, headers))
        result.operations = sum(1 for _ in probe.get_all_operations())
        result.open_operations = open_operations(app.openapi())
        ratio = CASES_PER_EXAMPLE
        for attempt in range(MAX_PASSES):
            missing = CASES_PER_SERVICE - result.cases
            if attempt and (missing <= 0 or not result.open_operations):
                break
            # Each pass aims at what is still missing with the ratio the last pass showed (a new seed: new cases).
            aim = missing * FIRST_PASS_SHARE if attempt == 0 else missing
            max_examples = max(1, math.ceil(aim / max(1, result.open_operations) / ratio))
            before = result.cases
            schema = schemathesis.openapi.from_asgi(
                "/openapi.json", app, config=_config(seed + attempt, max_examples, headers)
            )
            for event in schemathesis.engine.from_schema(schema).execute():
                if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
                    _count(result, event)
                elif isinstance(event, events.NonFatalError | events.FatalError):
                    result.errors.append(f"{type(event).__name__}: {getattr(event, 'label', '')} {event}"[:300])
            result.passes += 1
            ratio = max(
                MIN_CASES_PER_EXAMPLE, (result.cases - before) / (max_examples * max(1, result.open_operations))
            )
    finally:
        shutdown_lifespans()
    result.elapsed_s = time.monotonic() - started
    return result


@pytest.fixture(scope="module")
def s1_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "s1") as url:
        yield url


SERVICES = discover_services()
# Results of the services run so far in this session: each test rewrites the S1 record with all of them.
RESULTS: dict[str, ServiceResult] = {}


@pytest.fixture(scope="module")
def s1_runs(
    settings: AetherSettings, s1_database_url: str, reliability_seed: int
) -> Iterator[dict[str, Future[ServiceResult]]]:
    """Every service's run, started at once on `WORKERS` fresh processes (spawned: no forked event loop or sockets)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=context) as pool:
        runs = {
            service: pool.submit(_run_service, service, settings, s1_database_url, reliability_seed)
            for service in SERVICES
        }
        try:
            yield runs
        finally:
            for run in runs.values():
                run.cancel()


def test_s1_discovers_every_service() -> None:
    assert ONLY_SERVICES or {"oms", "risk", "hedge", "accounts", "hitl", "reports"} <= set(SERVICES), SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_s1_service_keeps_its_api_contract(
    service: str,
    s1_runs: dict[str, Future[ServiceResult]],
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    r = RESULTS[service] = s1_runs[service].result()
    results = [RESULTS[name] for name in SERVICES if name in RESULTS]
    write_reliability_record(
        {
            "id": "S1",
            "seed": reliability_seed,
            "cases": sum(result.cases for result in results),
            "violations": sum(result.server_errors + result.schema_violations for result in results),
            "cases_target_per_service": CASES_PER_SERVICE,
            "redis_db": REDIS_DB,
            "services_run": len(results),
            "services_discovered": len(SERVICES),
            "services": {result.service: result.record() for result in results},
        }
    )
    assert not r.errors, (r.service, r.errors[:3])
    assert r.server_errors == 0, (r.service, r.record()["failures"])
    assert r.schema_violations == 0, (r.service, r.record()["failures"])
    assert r.unauthenticated_cases > 0, f"{r.service}: no case ran without the token"
    assert r.cases >= (r.cases_target or 1), (r.service, r.cases, r.record()["cases_target_note"])
