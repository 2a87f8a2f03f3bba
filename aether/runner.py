"""`aether up`: the whole platform on one machine, each service its own process, logs prefixed.

A process that dies is restarted after an exponential backoff (logged with its exit code and the delay);
the others keep running. Ctrl-C or SIGTERM stops them all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
PAPER_VENUE = "paper"
PAPER_VENUE_URL_ENV = "AETHER_PAPER_VENUE_URL"
ADMIN_TOKEN_TTL_S = 8 * 3600
FEED_ARGS = ("feed", "replay", "--synthetic", "--speed", "1", "--symbol", "BTC/USD", "--start-price", "60000")
# The market-data store: the sink, and the candle views refreshed every minute (docs/marketdata.md).
STORE_COMMANDS = (
    ("marketdata-sink", ("data", "sink")),
    ("aggregates", ("data", "refresh-aggregates", "--every-s", "60")),
)


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
    """Each service's environment: the signing key for the accounts service alone (the one token issuer), for the
    OMS the paper venue process's URL when it runs too, and for the OMS, hedge and risk workers the credentials of
    their service identities (provisioned now, fresh secrets)."""
    from services.accounts.service_identities import provision_for_platform

    identities = provision_for_platform(env["AETHER_DATABASE_URL"], [entry.name for entry in services])
    signing = {"AETHER_JWT_PRIVATE_KEY_FILE": str(aether_home() / "keys" / "private.pem")}
    own: dict[str, dict[str, str]] = {"accounts": signing}
    venue = next((entry for entry in services if entry.name == PAPER_VENUE), None)
    if venue is not None:  # every OMS trades on the one paper venue process (else the OMS runs the venue itself)
        own["oms"] = {PAPER_VENUE_URL_ENV: venue.local_url}
    return {entry.name: {**env, **own.get(entry.name, {}), **identities.get(entry.name, {})} for entry in services}


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


def aether_command(*args: str) -> tuple[str, ...]:
    """`python -m aether *args` with this interpreter."""
    return (sys.executable, "-m", "aether", *args)


def _spawn(command: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own fixed argument lists (aether_command)
        list(command),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart a process that died: exponential backoff, capped; a long enough run forgets past crashes."""

    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0

    def crashes_after_exit(self, previous_crashes: int, uptime_s: float) -> int:
        """The crash count after an exit: a process that ran `stable_after_s` or longer starts again at one."""
        return 1 if uptime_s >= self.stable_after_s else previous_crashes + 1

    def delay_s(self, crashes: int) -> float:
        """The wait before restart number `crashes` (1, 2, 4, ... seconds up to `max_delay_s`)."""
        if crashes < 1:
            raise ValueError(f"crashes must be >= 1, not {crashes}")
        # min() before the power would overflow a float after ~1,000 crashes; cap the exponent instead.
        return min(self.initial_delay_s * 2.0 ** min(crashes - 1, 64), self.max_delay_s)


@dataclass
class _Child:
    name: str
    command: tuple[str, ...]
    color: str
    env: Mapping[str, str]
    process: subprocess.Popen[bytes]
    started_at: float
    crashes: int = 0
    restart_at: float | None = None


class Supervisor:
    """The platform's processes: each one that dies is restarted after a backoff, the others keep running."""

    def __init__(
        self, env: Mapping[str, str], policy: RestartPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._env = dict(env)
        self._policy = policy or RestartPolicy()
        self._clock = clock
        self._children: dict[str, _Child] = {}

    def start(
        self, name: str, command: Sequence[str], color: str = "white", env: Mapping[str, str] | None = None
    ) -> None:
        """Spawn `command` (see `aether_command`) as `name`, its output prefixed in `color`, in `env` (default: the
        supervisor's environment)."""
        own = dict(self._env if env is None else env)
        self._children[name] = _Child(
            name, tuple(command), color, own, self._launch(name, command, color, own), self._clock()
        )

    def process(self, name: str) -> subprocess.Popen[bytes]:
        """The current process of `name` (a new object after each restart)."""
        return self._children[name].process

    def crashes(self, name: str) -> int:
        """How many times `name` died in a row without running `stable_after_s` (0 while it is healthy)."""
        return self._children[name].crashes

    def tick(self) -> None:
        """Notice exits (log them, schedule the restart) and restart what is due."""
        now = self._clock()
        for child in self._children.values():
            if child.restart_at is None:
                code = child.process.poll()
                if code is None:
                    continue
                uptime_s = now - child.started_at
                child.crashes = self._policy.crashes_after_exit(child.crashes, uptime_s)
                delay_s = self._policy.delay_s(child.crashes)
                child.restart_at = now + delay_s
                console.print(
                    f"[red]{child.name} exited with {code} after {uptime_s:.1f}s[/red]; "
                    f"restarting in {delay_s:g}s (crash {child.crashes} in a row)",
                    highlight=False,
                )
            elif now >= child.restart_at:
                child.restart_at = None
                child.started_at = now
                child.process = self._launch(child.name, child.command, child.color, child.env)
                console.print(f"[yellow]restarted[/yellow] {child.name} (pid {child.process.pid})", highlight=False)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every live process, wait up to `timeout_s` in all, then SIGKILL what is left."""
        processes = [child.process for child in self._children.values()]
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _launch(self, name: str, command: Sequence[str], color: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        process = _spawn(command, env)
        if process.stdout is not None:
            threading.Thread(target=_pump, args=(name, color, process.stdout), daemon=True).start()
        return process


def _wait_ready(services: Sequence[ServiceEntry], supervisor: Supervisor) -> None:
    pending = {entry.name: entry.port for entry in services}
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client, console.status("waiting for services to be ready"):
        while pending and time.monotonic() < deadline:
            supervisor.tick()
            for name, port in list(pending.items()):
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        console.print(f"[green]ready[/green] {name:<9} http://127.0.0.1:{port}  (docs: /docs)")
                        del pending[name]
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
    if pending:
        console.print(f"[red]not ready after {READY_TIMEOUT_S:g}s:[/red] {', '.join(pending)} (still retried)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_platform(services: Sequence[ServiceEntry], env: dict[str, str], *, synthetic_feed: bool = True) -> int:
    """Run the services until Ctrl-C (or SIGTERM); a service that dies is restarted with backoff, the others run on.

    `synthetic_feed=False` leaves the market to you (`aether feed replay --file ...`), as in the exits walkthrough.
    """
    # SIGTERM (a supervisor, `timeout`, `kill`) stops the services too, like Ctrl-C, instead of orphaning them.
    signal.signal(signal.SIGTERM, _interrupt)
    env = prepare_environment(env)
    supervisor = Supervisor(env)
    environments = service_environments(services, env)
    try:
        for i, entry in enumerate(services):
            command = aether_command("serve", entry.name, "--port", str(entry.port))
            supervisor.start(entry.name, command, COLORS[i % len(COLORS)], environments[entry.name])
        _wait_ready(services, supervisor)
        for name, args in STORE_COMMANDS:
            supervisor.start(name, aether_command(*args), "white")
        if synthetic_feed:
            # A SYNTHETIC market (seeded random walk), so a new user can trade on paper at once.
            supervisor.start("feed", aether_command(*FEED_ARGS), "white")
        console.print(
            "[bold]Aether is up.[/bold] Ctrl-C stops the services (the stack keeps running: `aether stack down`)."
        )
        while True:
            supervisor.tick()
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping services")
        return 0
    finally:
        supervisor.stop_all()
