"""Per-account exchange credentials mounted as files (Kubernetes secrets): `<dir>/<account_id>/api_key|api_secret`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ACCOUNT_DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class MountedSecretError(Exception):
    """The account's secret folder exists but is unusable (a file missing or empty)."""


@dataclass(frozen=True, slots=True)
class VenueCredentials:
    """An exchange API key pair in memory; `repr` never shows the secret."""

    account_id: str
    api_key: str
    api_secret: str = field(repr=False)
    source: str  # "database" | "mounted"


def read_mounted_credentials(secrets_dir: Path, account_id: str) -> VenueCredentials | None:
    """The credentials under `secrets_dir/<account_id>/`, or None when the folder does not exist."""
    if not ACCOUNT_DIR_NAME.fullmatch(account_id):
        raise MountedSecretError("account id is not usable as a folder name")
    folder = secrets_dir / account_id
    if not folder.is_dir():
        return None
    values: dict[str, str] = {}
    for name in ("api_key", "api_secret"):
        path = folder / name
        try:
            values[name] = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise MountedSecretError(f"{name} is missing in the mounted secret folder of {account_id}") from None
        if not values[name]:
            raise MountedSecretError(f"{name} is empty in the mounted secret folder of {account_id}")
    return VenueCredentials(account_id, values["api_key"], values["api_secret"], source="mounted")
