"""OpenAPI snapshots: every service's document, rendered stably into docs/api/<service>.json.

The apps are built, never started (no lifespan, no backend): `create_app` with settings carrying a throwaway
signing key, since building an app needs a key to verify tokens and the document does not depend on it.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem
from shared.config import AetherSettings
from shared.service_catalog import SERVICES, ServiceEntry

SNAPSHOT_DIR = Path(__file__).resolve().parent.parent / "docs" / "api"
REGENERATE = "aether openapi"


def _build_settings() -> AetherSettings:
    key = generate_private_key()
    fields: dict[str, Any] = {
        "jwt_public_key": SecretStr(public_key_pem(key.public_key()).decode()),
        "jwt_private_key": SecretStr(private_key_pem(key).decode()),
        "log_level": "WARNING",
    }
    return AetherSettings(**fields)


def document(entry: ServiceEntry, settings: AetherSettings | None = None) -> dict[str, Any]:
    """The OpenAPI document of one service, from its app as `create_app` builds it."""
    app = importlib.import_module(entry.app_module).create_app(settings or _build_settings())
    doc: dict[str, Any] = app.openapi()
    return doc


def render(doc: dict[str, Any]) -> str:
    """Stable text: keys sorted, two-space indent, one trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def snapshots() -> dict[Path, str]:
    """Every service's snapshot path and its current text."""
    settings = _build_settings()
    return {SNAPSHOT_DIR / f"{entry.name}.json": render(document(entry, settings)) for entry in SERVICES}


def write_snapshots() -> list[Path]:
    """Write the snapshots that changed; returns them."""
    SNAPSHOT_DIR.mkdir(parents=True, exist_ok=True)
    changed = []
    for path, text in snapshots().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
