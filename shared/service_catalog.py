"""The platform's services: name, local port and import paths, in one place.

Names and import strings only: `shared` never imports a service. The `aether` CLI and runner, the ops
scripts and the tests read this table; a new service is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

LOCAL_HOST = "127.0.0.1"


class UnknownServiceError(LookupError):
    """A service name that is not in the catalog."""


@dataclass(frozen=True)
class ServiceEntry:
    """One service: its name (also its package under `services/` and its database schema) and local port."""

    name: str
    port: int

    @property
    def package(self) -> str:
        return f"services.{self.name}"

    @property
    def app_module(self) -> str:
        """The module whose `create_app(settings)` builds the service's FastAPI app."""
        return f"{self.package}.app"

    @property
    def config_module(self) -> str:
        return f"{self.package}.config"

    @property
    def local_url(self) -> str:
        """Where `aether up` serves it."""
        return f"http://{LOCAL_HOST}:{self.port}"


SERVICES: tuple[ServiceEntry, ...] = (
    ServiceEntry("oms", 8_001),
    ServiceEntry("risk", 8_002),
    ServiceEntry("hedge", 8_003),
    ServiceEntry("accounts", 8_004),
    ServiceEntry("hitl", 8_005),
    ServiceEntry("reports", 8_006),
    ServiceEntry("analytics", 8_007),
    ServiceEntry("backtest", 8_008),
    # The paper venue as its own process (a simulated exchange): every OMS process trades on this one.
    ServiceEntry("paper", 8_009),
)
SERVICE_NAMES: tuple[str, ...] = tuple(entry.name for entry in SERVICES)
_BY_NAME = {entry.name: entry for entry in SERVICES}


def service(name: str) -> ServiceEntry:
    """The catalog entry of `name`; an unknown name raises `UnknownServiceError`."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownServiceError(f"unknown service {name!r}; expected one of {', '.join(SERVICE_NAMES)}") from None
