"""gitleaks, the secret scanner of S7: built once from the Go module proxy into `$AETHER_HOME/bin`.

`gitleaks_binary()` returns it (or the one on PATH), building it with `go install` when it is missing, as the
network-fault tests build toxiproxy. The scan itself is `scan_tree()`: the repository's tracked tree with the
committed `.gitleaks.toml` (gitleaks' default rules plus the reasoned allowlist).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ops.stack.common import StackError, StackPaths, progress, run, stack_paths
from ops.stack.toxiproxy import BUILD_TIMEOUT_S, GO_FALLBACK

GITLEAKS_MODULE = "github.com/zricethezav/gitleaks/v8"
GITLEAKS_VERSION = "v8.21.2"
GITLEAKS_BINARY = "gitleaks"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / ".gitleaks.toml"


def gitleaks_binary(paths: StackPaths | None = None) -> Path:
    """The `gitleaks` executable, built into `$AETHER_HOME/bin` on first use."""
    p = paths or stack_paths()
    built = p.root / "bin" / GITLEAKS_BINARY
    if built.exists():
        return built
    on_path = shutil.which(GITLEAKS_BINARY)
    if on_path is not None:
        return Path(on_path)
    go = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if go is None:
        raise StackError(f"stack: {GITLEAKS_BINARY} is missing and there is no Go toolchain to build it (`go`)")
    built.parent.mkdir(parents=True, exist_ok=True)
    with progress(f"build gitleaks {GITLEAKS_VERSION} (go install)"), tempfile.TemporaryDirectory() as gobin:
        run(
            [go, "install", f"{GITLEAKS_MODULE}@{GITLEAKS_VERSION}"],
            what="go install could not build gitleaks",
            log=Path(gobin) / "go-install.log",
            timeout_s=BUILD_TIMEOUT_S,
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
        )
        shutil.move(Path(gobin) / GITLEAKS_BINARY, built)
    return built


def _tracked_copy(root: Path, into: Path) -> None:
    # The files git tracks or would track (caches, virtual environments and the stack's home are ignored), as
    # they are in the working tree: what a commit would publish.
    listed = subprocess.run(  # noqa: S603 - fixed argument list
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607 - git from PATH, as every developer runs it
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = root / name
        if source.is_file() and not source.is_symlink():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def scan_tree(root: Path = REPO_ROOT, binary: Path | None = None) -> list[dict[str, Any]]:
    """gitleaks' findings in the files of `root` that git tracks or would track, with the committed config."""
    gitleaks = binary or gitleaks_binary()
    with tempfile.TemporaryDirectory() as out:
        tree = Path(out) / "tree"
        _tracked_copy(root, tree)
        report = Path(out) / "report.json"
        done = subprocess.run(  # noqa: S603 - fixed argument list
            [
                str(gitleaks),
                "dir",
                str(tree),
                "--config",
                str(CONFIG),
                "--no-banner",
                "--redact",
                "--report-format",
                "json",
                "--report-path",
                str(report),
                "--exit-code",
                "0",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not report.exists():
            raise StackError(f"gitleaks failed (exit {done.returncode}): {done.stderr[-2000:]}")
        findings: list[dict[str, Any]] = json.loads(report.read_text(encoding="utf-8"))
    return findings
