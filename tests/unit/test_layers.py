"""The layer contracts (pyproject.toml [tool.importlinter]) hold on the tree, and a wrong import breaks them.

`lint-imports` runs as `make test` runs it, on the repository's own configuration; then on a copy of the
packages with deliberately wrong imports added, where it must fail and name each broken contract.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grimp
import pytest
import yaml

import services
import shared
from shared.service_catalog import SERVICES

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aether", "shared", "services", "data", "ml", "ops")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
DOMAIN_THIRD_PARTY = {"pydantic", "sortedcontainers"}  # money's annotated types; the book's sorted levels


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _verdicts(output: str) -> str:
    return " ".join(output.split())  # the report wraps long contract names


def test_the_repository_keeps_every_contract() -> None:
    done = _lint_imports(REPO_ROOT)

    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = _verdicts(done.stdout)
    for contract in _contracts().values():
        assert f"{contract['name']} KEPT" in verdicts


def test_wrong_imports_break_the_contracts_they_cross(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    wrong = {
        "shared/domain/_wrong_service.py": "import services.oms.app\n",  # domain-pure and shared-below-apps
        "services/hedge/_wrong_peer.py": "from services.oms import service\n",  # services-independent
        "ops/_wrong_service.py": "import services.risk\n",  # tools-above-services
    }
    for path, line in wrong.items():
        (tmp_path / path).write_text(f'"""A deliberately wrong import."""\n\n{line}')

    done = _lint_imports(tmp_path)

    assert done.returncode != 0, done.stdout + done.stderr
    verdicts = _verdicts(done.stdout)
    contracts = _contracts()
    for contract_id in ("domain-pure", "shared-below-apps", "services-independent", "tools-above-services"):
        assert f"{contracts[contract_id]['name']} BROKEN" in verdicts, verdicts
    assert "shared.domain._wrong_service -> services.oms" in verdicts
    assert "services.hedge._wrong_peer -> services.oms" in verdicts


def test_a_single_wrong_import_breaks_only_its_contract(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "shared/domain/_wrong_io.py").write_text('"""A deliberately wrong import."""\n\nimport sqlalchemy\n')

    done = _lint_imports(tmp_path)

    assert done.returncode != 0, done.stdout + done.stderr
    verdicts = _verdicts(done.stdout)
    contracts = _contracts()
    assert f"{contracts['domain-pure']['name']} BROKEN" in verdicts
    for contract_id in ("shared-below-apps", "services-independent", "tools-above-services"):
        assert f"{contracts[contract_id]['name']} KEPT" in verdicts


def test_domain_contract_forbids_every_other_module_of_shared() -> None:
    forbidden = set(_contracts()["domain-pure"]["forbidden_modules"])
    others = {f"shared.{module.name}" for module in pkgutil.iter_modules(shared.__path__)} - {"shared.domain"}

    assert others - forbidden == set(), "add the new shared module to the domain-pure contract"


def test_domain_imports_only_the_standard_library_and_its_pure_helpers() -> None:
    graph = grimp.build_graph("shared", include_external_packages=True)
    imported = {
        target.split(".")[0]
        for module in {"shared.domain", *graph.find_descendants("shared.domain")}
        for target in graph.find_modules_directly_imported_by(module)
        if not target.startswith("shared.domain")
    }

    assert imported - set(sys.stdlib_module_names) - DOMAIN_THIRD_PARTY == set()


def test_independence_contract_and_catalog_name_every_service_package() -> None:
    packages = {module.name for module in pkgutil.iter_modules(services.__path__) if module.ispkg}

    assert {entry.name for entry in SERVICES} == packages
    assert set(_contracts()["services-independent"]["modules"]) == {entry.package for entry in SERVICES}


@pytest.mark.parametrize("contract_id", ["shared-below-apps", "tools-above-services"])
def test_forbidden_contracts_name_real_packages(contract_id: str) -> None:
    contract = _contracts()[contract_id]

    for module in (*contract["source_modules"], *contract["forbidden_modules"]):
        assert (REPO_ROOT / module.replace(".", "/") / "__init__.py").exists(), module


def test_compose_and_prometheus_run_the_catalog_services() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())["services"]
    published = {
        name: int(spec["ports"][0].split(":")[0])
        for name, spec in compose.items()
        if spec.get("command", [None])[0] == "serve"
    }
    scrape = yaml.safe_load((REPO_ROOT / "ops/prometheus.yml").read_text())["scrape_configs"][0]
    targets = {target.split(":")[0] for target in scrape["static_configs"][0]["targets"]}

    assert published == {entry.name: entry.port for entry in SERVICES}
    assert targets == {entry.name for entry in SERVICES}
