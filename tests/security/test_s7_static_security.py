"""S7: ruff's bandit rules (`S`) find nothing and every inline exception says why; gitleaks finds no secret.

gitleaks is built from the Go module proxy on first use (ops/stack/gitleaks.py); its allowlist is the committed
.gitleaks.toml, each entry with its reason. The per-file ignores of pyproject.toml carry their reasons there.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ops.stack.common import StackError
from ops.stack.gitleaks import CONFIG, gitleaks_binary, scan_tree

ROOT = Path(__file__).resolve().parents[2]
# An inline exception: the codes after "noqa:", then a reason in words (after " - " or a second "#").
NOQA_S = re.compile(r"#\s*noqa:\s*((?:[A-Z]+[0-9]+[,\s]*)+)(.*)$")


def test_ruff_bandit_rules_find_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "S", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_every_inline_bandit_exception_has_a_reason() -> None:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    unexplained = []
    for name in tracked.stdout.split():
        for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
            match = NOQA_S.search(line)
            if match and re.search(r"\bS[0-9]+", match.group(1)) and not re.search(r"[a-zA-Z]", match.group(2)):
                unexplained.append(f"{name}:{number}")
    assert not unexplained, f"`noqa: S...` without a reason: {unexplained}"


def test_secret_scan_finds_nothing() -> None:
    try:
        binary = gitleaks_binary()
    except StackError as exc:
        pytest.skip(f"gitleaks could not be built: {exc}")
    findings = scan_tree(ROOT, binary)
    assert not findings, [f"{f['File']}:{f['StartLine']} {f['RuleID']}" for f in findings]


def test_secret_scan_sees_a_planted_secret(tmp_path: Path) -> None:
    try:
        binary = gitleaks_binary()
    except StackError as exc:
        pytest.skip(f"gitleaks could not be built: {exc}")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    fake_key = "AKIA" + "Z7QH2K4M9XWB3RTE"  # an AWS access key id shape, assembled so this file holds none
    (tmp_path / "settings.py").write_text(f'AWS_ACCESS_KEY_ID = "{fake_key}"\n', encoding="utf-8")
    findings = scan_tree(tmp_path, binary)
    assert [f["RuleID"] for f in findings] == ["aws-access-token"], findings
    assert CONFIG.exists()
