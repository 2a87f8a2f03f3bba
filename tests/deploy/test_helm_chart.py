"""The Helm chart, the image, compose and the workflow, checked by the real tools (issue 18 items 1-4).

The chart is rendered by the real `helm template` (built from the Go module proxy by ops/tools.sh), validated
against the schemas of the newest Kubernetes release kubernetes-validate ships, scanned by checkov (skip list:
deploy/helm/checkov.yaml), then its security properties are asserted one by one. The tests skip only when there is
no Go toolchain to build the tools with.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml
from referencing import Registry, Resource

from aether.cli import app as aether_app
from aether.runner import STORE_COMMANDS
from aether.smoke import READY_PATH, check, main
from ops.cli import app as ops_app
from shared.crypto.secrets_dir import read_mounted_credentials
from shared.service_catalog import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "aether-platform"
BIN = REPO / ".aether" / "bin"
CHECKOV_CONFIG = REPO / "deploy" / "helm" / "checkov.yaml"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
KUBERNETES_VERSION = kubernetes_validate.latest_version()
CRD_GROUPS = ("monitoring.coreos.com/",)
ACCOUNTS = ("acct-main", "acct-hedge")
REQUIRED = {
    "image.repository": "registry.example/aether",
    "image.tag": "1.4.2",
    "ingress.host": "aether.example.com",
    "ingress.tlsSecretName": "aether-tls",
    "secrets.existingSecret": "aether-platform",
}
# The ML workloads on (ml.enabled, the HPO Job too): what the ML tests and checkov render.
ML = {
    "ml.enabled": "true",
    "ml.image.tag": "1.4.2-ml",
    "ml.artifactRoot": "s3://aether-models/mlflow",
    "ml.retrain.schedule": "0 3 * * 1",
    "ml.hpo.enabled": "true",
    "ml.hpo.study": "spring",
    "ml.hpo.start": "2026-01-01T00:00:00",
    "ml.hpo.end": "2026-04-01T00:00:00",
    "ml.hpo.workers": "3",
}
POD_KINDS = ("Deployment", "Job", "CronJob", "Pod")
Doc = dict[str, Any]


def _tool(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        if shutil.which("go") is None:
            pytest.skip(f"{name}: no Go toolchain to build it with (ops/tools.sh); install Go to run the chart tests")
        subprocess.run(["bash", str(REPO / "ops" / "tools.sh"), name], check=True, cwd=REPO)
    return path


def _helm(*args: str, values: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    sets = [f"--set={key}={value}" for key, value in {**REQUIRED, **(values or {})}.items()]
    command = [str(_tool("helm")), "template", "prod", str(CHART), "--namespace", "trading", *sets, *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def _render(tmp: Path, **values: str) -> list[Doc]:
    accounts = {a: {"apiKey": f"key-{a}", "apiSecret": values.pop(f"secret_{a}", f"secret-{a}")} for a in ACCOUNTS}
    values_file = tmp / "accounts.yaml"
    values_file.write_text(yaml.safe_dump({"exchangeAccounts": {"accounts": accounts}}))
    result = _helm("--values", str(values_file), values=values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Doc]]:
    tmp = tmp_path_factory.mktemp("helm")
    return {color: _render(tmp, activeColor=color) for color in ("blue", "green")}


@pytest.fixture(scope="module")
def rendered_ml(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return _render(tmp_path_factory.mktemp("helm-ml"), activeColor="blue", **ML)


def _kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(doc for doc in _kind(docs, kind) if doc["metadata"]["name"] == name)


def _pod_spec(doc: Doc) -> Doc:
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(doc["spec"]["template"]["spec"])


def _pod_labels(doc: Doc) -> dict[str, str]:
    if doc["kind"] == "Pod":
        return dict(doc["metadata"]["labels"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
    return dict(doc["spec"]["template"]["metadata"]["labels"])


def _component(doc: Doc) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def test_chart_runs_every_catalog_service_and_every_worker_aether_up_runs(rendered: dict[str, list[Doc]]) -> None:
    deployments = _kind(rendered["blue"], "Deployment")
    for color in ("blue", "green"):
        assert {_component(d) for d in deployments if d["metadata"]["labels"].get("aether.io/color") == color} == set(
            SERVICE_NAMES
        )
    worker_args = [
        _pod_spec(d)["containers"][0]["args"] for d in deployments if "aether.io/color" not in d["metadata"]["labels"]
    ]
    for _, args in STORE_COMMANDS:
        assert list(args) in worker_args
    assert any(args[:2] == ["feed", "kraken"] for args in worker_args)


@cache
def _kubernetes_schema(kind: str, api_version: str) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's strict schema of one kind, compiled once.

    `kubernetes_validate.validate` does the same per call but rebuilds the reference registry every time (30 s for
    the two renders); this keeps its schema files and lookup, with one validator per kind.
    """
    version = max(kubernetes_validate.utils.all_versions(), key=kubernetes_validate.utils.major_minor)
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kubernetes_validate.utils.schema_contents(f"{folder}/{kind.lower()}-{api}.json", KUBERNETES_VERSION)
    definitions = kubernetes_validate.utils.schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(doc: Doc) -> None:
    _kubernetes_schema(doc["kind"], doc["apiVersion"]).validate(doc)


def test_every_manifest_is_valid_for_the_current_kubernetes_release(rendered: dict[str, list[Doc]]) -> None:
    assert KUBERNETES_VERSION >= "1.34"
    for docs in rendered.values():
        for doc in docs:
            if doc["apiVersion"].startswith(CRD_GROUPS):
                assert doc["spec"], doc["metadata"]["name"]
                continue
            _validate(doc)


def test_kubernetes_validation_catches_a_bad_manifest(rendered: dict[str, list[Doc]]) -> None:
    deployment = copy.deepcopy(_kind(rendered["blue"], "Deployment")[0])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type"):
        _validate(deployment)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRooot"] = True
    with pytest.raises(jsonschema.ValidationError, match="runAsNonRooot"):
        _validate(deployment)


def test_checkov_finds_no_failed_check(rendered_ml: list[Doc], tmp_path: Path) -> None:
    checkov = _tool("checkov")
    # One colour with the ML workloads on (one checkov run, the suite's slowest step): the other colour renders the
    # same templates, differing only in colour labels and selector values.
    manifest = tmp_path / "blue.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered_ml))
    result = subprocess.run(
        [str(checkov), "--config-file", str(CHECKOV_CONFIG), "-f", str(manifest), "-o", "json", "--quiet"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report.get("results", {}).get("failed_checks", [])]
    assert failed == [], failed
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 1000
    # Skipped: only the resource-level skips the chart annotates, each with its reason (workers' and the test pod's probes).
    annotated = [
        k for d in rendered_ml for k in d["metadata"].get("annotations", {}) if k.startswith("checkov.io/skip")
    ]
    assert report["summary"]["skipped"] == len(annotated) == 10


def test_helm_lint_is_clean_in_strict_mode() -> None:
    sets = [f"--set-string={key}={value}" for key, value in REQUIRED.items()]
    result = subprocess.run([str(_tool("helm")), "lint", "--strict", str(CHART), *sets], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_every_ingress_is_tls_only_with_hsts_and_hardened_headers(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["blue"]
    ingresses = _kind(docs, "Ingress")
    assert len(ingresses) == 8
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
        assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        assert hosts <= {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
        headers = _named(docs, "ConfigMap", annotations["nginx.ingress.kubernetes.io/custom-headers"].split("/")[1])
        assert re.fullmatch(r"max-age=(\d+); includeSubDomains", headers["data"]["Strict-Transport-Security"])
        assert headers["data"]["X-Frame-Options"] == "DENY"
        assert headers["data"]["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["data"]["Content-Security-Policy"]
        assert headers["data"]["Referrer-Policy"] == "no-referrer"


def test_headers_are_overridable_per_service(tmp_path: Path) -> None:
    docs = _render(tmp_path, **{"services.reports.headers.Content-Security-Policy": "default-src 'self'"})
    assert _named(docs, "ConfigMap", "prod-reports-headers")["data"]["Content-Security-Policy"] == "default-src 'self'"
    assert "frame-ancestors" in _named(docs, "ConfigMap", "prod-oms-headers")["data"]["Content-Security-Policy"]


def test_the_backtest_data_volume_is_mounted_read_only_in_the_backtest_service_only(tmp_path: Path) -> None:
    data = {
        "services.backtest.dataClaim.claimName": "backtest-data",
        "services.backtest.dataClaim.mountPath": "/var/lib/aether/backtest",
        "services.backtest.dataClaim.env": "AETHER_BACKTEST_DATA_DIR",
    }
    docs = _render(tmp_path, **data)
    for deployment in _kind(docs, "Deployment"):
        spec = _pod_spec(deployment)
        claims = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
        if not deployment["metadata"]["name"].startswith("prod-backtest-"):
            assert not claims, deployment["metadata"]["name"]
            continue
        assert claims == [{"name": "data", "persistentVolumeClaim": {"claimName": "backtest-data", "readOnly": True}}]
        (container,) = spec["containers"]
        assert {"name": "data", "mountPath": "/var/lib/aether/backtest", "readOnly": True} in container["volumeMounts"]
        assert {"name": "AETHER_BACKTEST_DATA_DIR", "value": "/var/lib/aether/backtest"} in container["env"]
    result = _helm(values={**data, "services.backtest.dataClaim.mountPath": "relative"})
    assert result.returncode != 0
    assert "dataClaim/mountPath" in result.stderr, result.stderr


def test_every_container_is_non_root_read_only_and_drops_all(rendered: dict[str, list[Doc]]) -> None:
    pods = [doc for doc in rendered["blue"] if doc["kind"] in POD_KINDS]
    assert len(pods) > 20
    for doc in pods:
        _assert_restricted(doc)


def _assert_restricted(doc: Doc) -> None:
    spec = _pod_spec(doc)
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] != 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        tmp_mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]  # noqa: S108 - an emptyDir
        assert [m["name"] in tmp_volumes for m in tmp_mounts] == [True]


def _ml_docs(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component", "").startswith("ml")]


def _cli_params(args: list[str]) -> dict[str, Any]:
    """The options the real `aether` CLI parses from `args` (nothing runs): a chart/CLI mismatch fails here."""
    command: Any = typer.main.get_command(aether_app)
    path, rest = ["aether"], list(args)
    while hasattr(command, "list_commands"):  # a group (typer ships its own click)
        sub = command.get_command(command.make_context("aether", [], resilient_parsing=True), rest[0])
        assert sub is not None, rest[0]
        command, rest = sub, rest[1:]
        path.append(command.name or "")
    ctx = command.make_context(" ".join(path), rest)
    return {"command": ctx.info_name, **ctx.params}


def test_ml_is_off_by_default_and_renders_nothing(rendered: dict[str, list[Doc]]) -> None:
    for docs in rendered.values():
        assert _ml_docs(docs) == []
        assert not any(d["metadata"]["name"].startswith("prod-ml") for d in docs)
        assert not any("aether.io/ml" in json.dumps(d) for d in docs)


def test_ml_on_renders_the_signal_worker_retraining_cronjob_and_hpo_job(rendered_ml: list[Doc]) -> None:
    ml = _ml_docs(rendered_ml)
    assert {(d["kind"], d["metadata"]["name"]) for d in ml} == {
        ("ServiceAccount", "prod-ml"),
        ("Deployment", "prod-ml-signals"),
        ("CronJob", "prod-ml-retrain"),
        ("Job", "prod-ml-hpo-spring"),
    }
    for doc in ml:
        _validate(doc)
    pods = [d for d in ml if d["kind"] in POD_KINDS]
    for doc in pods:
        _assert_restricted(doc)
        spec = _pod_spec(doc)
        (container,) = spec["containers"]
        assert container["image"] == "registry.example/aether:1.4.2-ml"
        assert spec["serviceAccountName"] == "prod-ml"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["AETHER_ML_ARTIFACT_ROOT"] == "s3://aether-models/mlflow"
        assert env["AETHER_DATABASE_URL_FILE"] == "/var/run/aether/secrets/database-url"
        assert "AETHER_ACCOUNT_SECRETS_DIR" not in env
        assert set(container["resources"]) == {"requests", "limits"}
    retrain = _named(ml, "CronJob", "prod-ml-retrain")
    assert retrain["spec"]["schedule"] == "0 3 * * 1"
    assert retrain["spec"]["concurrencyPolicy"] == "Forbid"
    hpo = _named(ml, "Job", "prod-ml-hpo-spring")["spec"]
    assert hpo["completionMode"] == "Indexed"
    assert hpo["parallelism"] == hpo["completions"] == 3
    assert "helm.sh/hook" not in _named(ml, "Job", "prod-ml-hpo-spring")["metadata"].get("annotations", {})


def test_ml_arguments_are_what_the_aether_cli_parses(rendered_ml: list[Doc], tmp_path: Path) -> None:
    signals = _cli_params(_pod_spec(_named(rendered_ml, "Deployment", "prod-ml-signals"))["containers"][0]["args"])
    assert signals["command"] == "aether ml signals"
    assert (signals["model"], signals["horizon_s"], signals["account"]) == ("aether-direction", 3600, None)
    hpo = _cli_params(_pod_spec(_named(rendered_ml, "Job", "prod-ml-hpo-spring"))["containers"][0]["args"])
    assert (hpo["command"], hpo["study"], hpo["trials"]) == ("aether ml hpo", "spring", 50)
    assert (hpo["start"].isoformat(), hpo["end"].isoformat()) == ("2026-01-01T00:00:00", "2026-04-01T00:00:00")
    # The retraining window is computed by /bin/sh at run time: run that line with `aether` printing its argv.
    container = _pod_spec(_named(rendered_ml, "CronJob", "prod-ml-retrain"))["containers"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    stub = tmp_path / "aether"
    stub.write_text("#!/bin/sh\nexec python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    argv = json.loads(
        subprocess.run(
            ["/bin/sh", "-c", container["args"][0]], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    retrain = _cli_params(argv)
    assert retrain["command"] == "aether ml retrain"
    assert retrain["end"] - retrain["start"] == timedelta(days=30)
    assert retrain["end"] == datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    assert json.loads(retrain["label"]) == {"method": "forward", "horizon": 60}
    assert (retrain["trainer"], retrain["features"].split(",")[0], retrain["model"]) == (
        "lightgbm",
        "spread_bps",
        "aether-direction",
    )


def test_ml_pods_reach_the_artifact_store_and_no_exchange(rendered_ml: list[Doc]) -> None:
    s3 = _named(rendered_ml, "NetworkPolicy", "prod-ml-artifact-egress")
    wanted = s3["spec"]["podSelector"]["matchLabels"].items()
    selected = {_component(d) for d in rendered_ml if d["kind"] in POD_KINDS and wanted <= _pod_labels(d).items()}
    assert selected == {"ml-signals", "ml-retrain", "ml-hpo"}
    assert s3["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    venue = _named(rendered_ml, "NetworkPolicy", "prod-venue-egress")["spec"]["podSelector"]["matchLabels"].items()
    assert not any(venue <= _pod_labels(d).items() for d in _ml_docs(rendered_ml) if d["kind"] in POD_KINDS)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"ml.artifactRoot": ""}, "ml.artifactRoot"),
        ({"ml.artifactRoot": "file:///tmp/mlruns"}, "artifactRoot"),
        ({"ml.image.tag": ""}, "ml.image.tag"),
        ({"ml.hpo.start": ""}, "ml.hpo.start"),
        ({"ml.hpo.study": "Spring_2026"}, "study"),
        ({"ml.data.label": "{'method': 'forward'}"}, "label"),
    ],
)
def test_an_ml_value_missing_or_bad_fails_the_render_naming_it(change: dict[str, str], named: str) -> None:
    result = _helm(values={**ML, **change})
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def _secret_names(spec: Doc) -> set[str]:
    names = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    for volume in spec["volumes"]:
        names |= {s["secret"]["name"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s}
    return names


def test_each_account_secret_is_mounted_only_in_the_oms(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["blue"]
    account_secrets = {f"prod-exchange-{a}" for a in ACCOUNTS}
    assert {s["metadata"]["name"] for s in _kind(docs, "Secret")} == account_secrets
    for doc in (d for d in docs if d["kind"] in POD_KINDS):
        spec = _pod_spec(doc)
        mounted = _secret_names(spec) & account_secrets
        if _component(doc) != "oms":
            assert mounted == set(), doc["metadata"]["name"]
            assert "AETHER_ACCOUNT_SECRETS_DIR" not in {e["name"] for e in spec["containers"][0]["env"]}
            continue
        assert mounted == account_secrets
        volume = next(v for v in spec["volumes"] if v["name"] == "exchange-accounts")
        paths = {item["path"] for source in volume["projected"]["sources"] for item in source["secret"]["items"]}
        assert paths == {f"{a}/{f}" for a in ACCOUNTS for f in ("api_key", "api_secret")}
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "exchange-accounts")
        assert env["AETHER_ACCOUNT_SECRETS_DIR"] == mount["mountPath"]


def test_the_oms_reads_each_projected_account_key_pair(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    docs = rendered["blue"]
    secrets = {s["metadata"]["name"]: s["data"] for s in _kind(docs, "Secret")}
    oms = _pod_spec(_named(docs, "Deployment", "prod-oms-blue"))
    volume = next(v for v in oms["volumes"] if v["name"] == "exchange-accounts")
    # Lay the files out as the kubelet projects them, then read them with the OMS's own reader.
    for source in volume["projected"]["sources"]:
        for item in source["secret"]["items"]:
            path = tmp_path / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(secrets[source["secret"]["name"]][item["key"]]))
    for account in ACCOUNTS:
        credentials = read_mounted_credentials(tmp_path, account)
        assert credentials is not None
        assert credentials.api_key == f"key-{account}"
        assert credentials.api_secret == f"secret-{account}"


def test_token_signing_key_is_mounted_only_in_accounts(rendered: dict[str, list[Doc]]) -> None:
    for doc in (d for d in rendered["blue"] if d["kind"] in POD_KINDS):
        keys = {
            item["key"] for v in _pod_spec(doc)["volumes"] if "secret" in v for item in v["secret"].get("items", [])
        }
        assert ("jwt-private-key" in keys) == (_component(doc) == "accounts"), doc["metadata"]["name"]


def test_rotating_an_account_secret_rolls_only_the_oms(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    rotated = _render(tmp_path, activeColor="blue", **{"secret_acct-main": "rotated"})
    for before in _kind(rendered["blue"], "Deployment"):
        after = _named(rotated, "Deployment", before["metadata"]["name"])
        changed = before["spec"]["template"] != after["spec"]["template"]
        assert changed == (_component(before) == "oms"), before["metadata"]["name"]
        if changed:
            key = "checksum/exchange-accounts"
            assert (
                before["spec"]["template"]["metadata"]["annotations"][key]
                != after["spec"]["template"]["metadata"]["annotations"][key]
            )


def test_the_colour_value_switches_the_live_selector(rendered: dict[str, list[Doc]]) -> None:
    for color, docs in rendered.items():
        live = [s for s in _kind(docs, "Service") if s["metadata"]["labels"].get("aether.io/live") == "true"]
        assert {_component(s) for s in live} == set(SERVICE_NAMES)
        assert {s["spec"]["selector"]["aether.io/color"] for s in live} == {color}
        previews = {s["metadata"]["name"] for s in _kind(docs, "Service")} - {s["metadata"]["name"] for s in live}
        assert previews == {f"prod-{name}-{c}" for name in SERVICE_NAMES for c in ("blue", "green")}
    blue = {d["metadata"]["name"] for d in _kind(rendered["blue"], "Deployment")}
    assert blue == {d["metadata"]["name"] for d in _kind(rendered["green"], "Deployment")}
    smoke = [d for d in rendered["green"] if d["kind"] == "Pod"]
    assert [p["metadata"]["annotations"]["helm.sh/hook"] for p in smoke] == ["test"]
    assert all(url.endswith("-green:8000") for url in smoke[0]["spec"]["containers"][0]["args"])


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"ingress.host": ""}, "ingress.host"),
        ({"secrets.existingSecret": ""}, "secrets.existingSecret"),
        ({"image.tag": ""}, "image.tag"),
        ({"ingress.tlsSecretName": ""}, "ingress.tlsSecretName"),
        ({"activeColor": "purple"}, "activeColor"),
        ({"image.tag": "latest"}, "image.tag"),
    ],
)
def test_a_missing_or_bad_required_value_fails_the_render_naming_it(missing: dict[str, str], named: str) -> None:
    result = _helm(values=missing)
    assert result.returncode != 0
    assert named.replace(".", "/") in result.stderr or named in result.stderr, result.stderr


def test_an_account_without_its_secret_fails_naming_it(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"exchangeAccounts": {"accounts": {"acct-x": {"apiKey": "k"}}}}))
    result = _helm("--values", str(values))
    assert result.returncode != 0
    assert "acct-x" in result.stderr, result.stderr
    assert "apiSecret" in result.stderr, result.stderr


def test_an_account_name_that_cannot_be_a_folder_or_secret_name_fails_naming_it(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(
        yaml.safe_dump({"exchangeAccounts": {"accounts": {"Bad_Acct": {"apiKey": "k", "apiSecret": "s"}}}})
    )
    result = _helm("--values", str(values))
    assert result.returncode != 0
    assert "Bad_Acct" in result.stderr, result.stderr


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(rendered: dict[str, list[Doc]]) -> None:
    (job,) = _kind(rendered["blue"], "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert _pod_spec(job)["containers"][0]["args"] == ["migrate"]


def test_every_ops_job_is_a_cronjob_running_a_real_ops_command(rendered: dict[str, list[Doc]]) -> None:
    commands = {
        command.name or (command.callback.__name__ if command.callback else "")
        for command in ops_app.registered_commands
    }
    cronjobs = _kind(rendered["blue"], "CronJob")
    verbs = set()
    for cronjob in cronjobs:
        container = _pod_spec(cronjob)["containers"][0]
        # A job that needs a computed window runs `/bin/sh -c "exec aether ops <verb> ..."`.
        args = container["args"][0].split()[2:] if "command" in container else container["args"]
        assert args[0] == "ops", args
        verbs.add(args[1])
    assert verbs == {"backup", "backup-retention", "archive", "refresh-aggregates", "prometheus-snapshot"}
    assert verbs <= commands


def test_alerts_cover_the_issue_and_use_only_metrics_the_code_exports(rendered: dict[str, list[Doc]]) -> None:
    (rule,) = _kind(rendered["blue"], "PrometheusRule")
    names = [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(names) == len(set(names)), "an alert is defined twice (chart group and files/prometheus-rules.yaml)"
    alerts = {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}
    needed = (
        "KillSwitchEngaged",
        "KillSwitchRecommended",
        "ReconciliationFailing",
        "OutboxBacklog",
        "ConsumerLag",
        "ReadinessDown",
        "NotReady",
        "BackupTooOld",
    )
    for name in needed:
        assert f"Aether{name}" in alerts, name
    source = "\n".join(
        p.read_text() for top in ("shared", "services", "ops", "data") for p in (REPO / top).rglob("*.py")
    )
    for expr in alerts.values():
        for metric in re.findall(r"\baether_[a-z_]+", expr):
            assert f'"{metric}"' in source, metric
    (monitor,) = _kind(rendered["blue"], "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_network_policies_deny_by_default_and_open_venue_egress_only_to_its_callers(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["blue"]
    deny = _named(docs, "NetworkPolicy", "prod-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"]
    venue = _named(docs, "NetworkPolicy", "prod-venue-egress")["spec"]["podSelector"]["matchLabels"]
    callers = {
        _component(d)
        for d in docs
        if d["kind"] == "Deployment"
        and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in venue.items())
    }
    assert callers == {"oms", "feed-kraken"}


def test_workflow_passes_actionlint() -> None:
    result = subprocess.run(
        [str(_tool("actionlint")), "-no-color"], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_follows_the_compose_specification() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _compose_validator().iter_errors(compose)]
    assert errors == []
    assert set(SERVICE_NAMES) <= set(compose["services"])


def test_compose_validation_catches_a_bad_file() -> None:
    bad = {"services": {"oms": {"image": "x", "ports": 8000, "restart": "sometimes-maybe"}}}
    paths = {"/".join(map(str, e.absolute_path)) for e in _compose_validator().iter_errors(bad)}
    assert "services/oms/ports" in paths


def test_image_is_multi_stage_pinned_and_non_root() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert base
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.M)
    assert len(stages) >= 2
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users
    assert users[-1].split(":")[0].isdigit()
    assert users[-1].split(":")[0] != "0"
    assert dockerfile.rindex("USER ") > dockerfile.rindex("FROM ")
    # The default build (the last stage) is the services' image; the ML image is the `ml` target.
    assert stages[-1] == "runtime"
    ml = dockerfile[dockerfile.index("AS ml\n") : dockerfile.index("AS runtime\n")]
    assert re.search(r"^USER 10001:10001$", ml, re.M)
    assert "COPY --from=build-ml /opt/aether /opt/aether" in ml
    build_ml = dockerfile[dockerfile.index("AS build-ml\n") : dockerfile.index("AS runtime-base\n")]
    assert '".[ml,torch]"' in build_ml
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", dockerfile, re.M)
    assert re.search(r"^ARG TORCH_VERSION=\d+\.\d+\.\d+$", dockerfile, re.M)


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == f"/up{READY_PATH}" else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def ready_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_smoke_check_names_each_service_that_is_not_ready(ready_server: str) -> None:
    with httpx.Client(timeout=2) as client:
        failures = check([f"{ready_server}/up", f"{ready_server}/down", "http://127.0.0.1:9"], client)
    assert failures[0] == f"{ready_server}/down{READY_PATH}: HTTP 503"
    assert failures[1].startswith("http://127.0.0.1:9/readyz: Connect")
    assert len(failures) == 2


def test_smoke_command_refuses_arguments_that_are_not_urls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["oms:8000"]) == 2
    assert "oms:8000" in capsys.readouterr().err
    assert main([]) == 2


def test_smoke_command_exits_non_zero_when_a_service_is_not_ready(
    ready_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([f"{ready_server}/up"]) == 0
    assert main([f"{ready_server}/up", f"{ready_server}/down"]) == 1
    assert "NOT READY" in capsys.readouterr().out
