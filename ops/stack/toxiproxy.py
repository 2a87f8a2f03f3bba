"""Toxiproxy, the fault-injecting TCP proxy of the network-fault tests (R8): built once from the Go module proxy.

`toxiproxy_binary()` returns `toxiproxy-server` from `$AETHER_HOME/bin` (or PATH), building it with `go install`
when it is missing, so a clean checkout needs only a Go toolchain. The server is started by the tests, on
loopback ports of their own; nothing here runs it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ops.stack.common import StackError, StackPaths, progress, run, stack_paths

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2"
TOXIPROXY_VERSION = "v2.5.0"
TOXIPROXY_BINARY = "toxiproxy-server"
GO_FALLBACK = Path("/usr/local/go/bin/go")  # where the Go toolchain lives when PATH lacks it
BUILD_TIMEOUT_S = 600


def toxiproxy_binary(paths: StackPaths | None = None) -> Path:
    """The `toxiproxy-server` executable, built into `$AETHER_HOME/bin` on first use."""
    p = paths or stack_paths()
    built = p.root / "bin" / TOXIPROXY_BINARY
    if built.exists():
        return built
    on_path = shutil.which(TOXIPROXY_BINARY)
    if on_path is not None:
        return Path(on_path)
    go = shutil.which("go") or (str(GO_FALLBACK) if GO_FALLBACK.exists() else None)
    if go is None:
        raise StackError(f"stack: {TOXIPROXY_BINARY} is missing and there is no Go toolchain to build it (`go`)")
    built.parent.mkdir(parents=True, exist_ok=True)
    with progress(f"build toxiproxy {TOXIPROXY_VERSION} (go install)"), tempfile.TemporaryDirectory() as gobin:
        log = Path(gobin) / "go-install.log"
        run(
            [go, "install", f"{TOXIPROXY_MODULE}/cmd/server@{TOXIPROXY_VERSION}"],
            what="go install could not build toxiproxy",
            log=log,
            timeout_s=BUILD_TIMEOUT_S,
            env={**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"},
        )
        # The module names its command `server`; keep it under an unambiguous name.
        shutil.move(Path(gobin) / "server", built)
    return built
