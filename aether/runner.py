"""`aether up`: the whole platform on one machine, each service its own process, logs prefixed."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.markup import escape

from ops import stack
from shared.service_catalog import ServiceEntry

console = Console()
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")
READY_TIMEOUT_S = 60.0
ADMIN_TOKEN_TTL_S = 8 * 3600
FEED_ARGS = ("feed", "replay", "--synthetic", "--speed", "1", "--symbol", "BTC/USD", "--start-price", "60000")


def aether_home() -> Path:
    """The stack's home (``$AETHER_HOME``, else ``<repo>/.aether``): keys, tokens and ``stack.env`` live there."""
    return stack.stack_paths().root


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the `export NAME=value` lines the stack writes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip().removeprefix("export ").strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            values[name] = value.strip("'\"")
    return values


def prepare_environment(env: dict[str, str]) -> dict[str, str]:
    """Start the stack, create the dev signing key, migrate; return the services' environment."""
    from shared.auth.keys import write_key_pair
    from shared.db.migrate import upgrade

    stack.up()
    env.update({k: v for k, v in read_env_file(aether_home() / "stack.env").items() if k not in env})
    keys_dir = aether_home() / "keys"
    private_path, public_path = keys_dir / "private.pem", keys_dir / "public.pem"
    if not (private_path.exists() and public_path.exists()):
        write_key_pair(keys_dir)
        console.print(f"created the development signing key in {keys_dir}")
    env.setdefault("AETHER_JWT_PUBLIC_KEY_FILE", str(public_path))
    _write_admin_token(private_path, env)
    _prepare_anchor_key(keys_dir, env)
    with console.status("applying migrations"):
        upgrade(env["AETHER_DATABASE_URL"])
    console.print("migrations applied")
    _harden_audit(env)
    return env


def service_environments(services: Sequence[ServiceEntry], env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Each service's environment: the signing key for the accounts service alone (the one token issuer), and for
    the hedge and risk workers the credentials of their service identities (provisioned now, fresh secrets)."""
    from services.accounts.service_identities import provision_for_platform

    identities = provision_for_platform(env["AETHER_DATABASE_URL"], [entry.name for entry in services])
    signing = {"AETHER_JWT_PRIVATE_KEY_FILE": str(aether_home() / "keys" / "private.pem")}
    return {
        entry.name: {**env, **(signing if entry.name == "accounts" else {}), **identities.get(entry.name, {})}
        for entry in services
    }


def _harden_audit(env: Mapping[str, str]) -> None:
    """As the stack's superuser: the audit and anchor tables go to a NOLOGIN owner, the app role may only append."""
    from sqlalchemy.engine import make_url

    from shared.audit.roles import AUDIT_OWNER_ROLE, harden_audit_tables

    superuser_url = env.get("AETHER_DATABASE_SUPERUSER_URL")
    if not superuser_url:
        console.print("[yellow]no AETHER_DATABASE_SUPERUSER_URL: the app role still owns the audit tables[/yellow]")
        return
    app_role = make_url(env["AETHER_DATABASE_URL"]).username or "aether"
    libpq = make_url(superuser_url).set(drivername="postgresql").render_as_string(hide_password=False)
    harden_audit_tables(libpq, app_role)
    console.print(f"audit tables owned by {AUDIT_OWNER_ROLE}; {app_role} may only append")


def _prepare_anchor_key(keys_dir: Path, env: dict[str, str]) -> None:
    """The audit anchor key pair (separate from the token key), signed with by the reports service's anchoring job."""
    from shared.audit.anchors import ANCHOR_KEY_DIR, ensure_anchor_key_pair

    anchor_private, anchor_public = ensure_anchor_key_pair(keys_dir / ANCHOR_KEY_DIR)
    env.setdefault("AETHER_AUDIT_ANCHOR_PRIVATE_KEY_FILE", str(anchor_private))
    env.setdefault("AETHER_AUDIT_ANCHOR_PUBLIC_KEY_FILE", str(anchor_public))


def _write_admin_token(private_path: Path, env: Mapping[str, str]) -> None:
    """A bootstrap admin token for the local platform, readable only by its owner."""
    from shared.auth.roles import Role, default_scopes
    from shared.auth.tokens import TokenIssuer

    issuer = TokenIssuer(
        private_path.read_bytes(),
        env.get("AETHER_JWT_ISSUER", "aether"),
        env.get("AETHER_JWT_AUDIENCE", "aether-platform"),
    )
    roles = [Role.ADMIN, Role.OPERATOR, Role.VIEWER]
    token = issuer.issue("local-admin", roles, scopes=default_scopes(roles), accounts=["*"], ttl_s=ADMIN_TOKEN_TTL_S)
    token_path = aether_home() / "admin.token"
    token_path.touch(mode=0o600, exist_ok=True)
    token_path.write_text(token + "\n")
    console.print(f"bootstrap admin token (valid {ADMIN_TOKEN_TTL_S // 3600} h): {token_path}")


def _pump(name: str, color: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip()
        console.print(f"[{color}]{name:>9} |[/{color}] {escape(line)}", highlight=False, soft_wrap=True)


def _spawn(name: str, args: list[str], color: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(  # noqa: S603 - fixed argument list, our own interpreter
        [sys.executable, "-m", "aether", *args],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if process.stdout is not None:
        threading.Thread(target=_pump, args=(name, color, process.stdout), daemon=True).start()
    return process


def _wait_ready(services: Sequence[ServiceEntry], processes: Mapping[str, subprocess.Popen[bytes]]) -> bool:
    pending = {entry.name: entry.port for entry in services}
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client, console.status("waiting for services to be ready"):
        while pending and time.monotonic() < deadline:
            for name, port in list(pending.items()):
                if processes[name].poll() is not None:
                    console.print(f"[red]{name} exited with {processes[name].returncode}[/red]")
                    return False
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        console.print(f"[green]ready[/green] {name:<9} http://127.0.0.1:{port}  (docs: /docs)")
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    if pending:
        console.print(f"[red]not ready after {READY_TIMEOUT_S:g}s:[/red] {', '.join(pending)}")
    return not pending


def _stop_all(processes: Mapping[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_platform(services: Sequence[ServiceEntry], env: dict[str, str], *, synthetic_feed: bool = True) -> int:
    """Run the services until Ctrl-C (or SIGTERM) or until one of them dies; return the exit code.

    `synthetic_feed=False` leaves the market to you (`aether feed replay --file ...`), as in the exits walkthrough.
    """
    # SIGTERM (a supervisor, `timeout`, `kill`) stops the services too, like Ctrl-C, instead of orphaning them.
    signal.signal(signal.SIGTERM, _interrupt)
    env = prepare_environment(env)
    environments = service_environments(services, env)
    processes = {
        entry.name: _spawn(
            entry.name,
            ["serve", entry.name, "--port", str(entry.port)],
            COLORS[i % len(COLORS)],
            environments[entry.name],
        )
        for i, entry in enumerate(services)
    }
    try:
        if not _wait_ready(services, processes):
            return 1
        if synthetic_feed:
            # A SYNTHETIC market (seeded random walk), so a new user can trade on paper at once.
            processes["feed"] = _spawn("feed", [*FEED_ARGS], "white", env)
        console.print(
            "[bold]Aether is up.[/bold] Ctrl-C stops the services (the stack keeps running: `aether stack down`)."
        )
        while all(process.poll() is None for process in processes.values()):
            time.sleep(0.5)
        dead = [name for name, process in processes.items() if process.poll() is not None]
        console.print(f"[red]service exited:[/red] {', '.join(dead)}; stopping the others")
        return 1
    except KeyboardInterrupt:
        console.print("stopping services")
        return 0
    finally:
        _stop_all(processes)
