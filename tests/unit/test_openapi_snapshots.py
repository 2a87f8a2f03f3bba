"""docs/api/<service>.json is what each service serves: a stale snapshot fails and names the command to run."""

from __future__ import annotations

import json

from aether.openapi import REGENERATE, SNAPSHOT_DIR, render, snapshots
from shared.service_catalog import SERVICE_NAMES


def test_every_snapshot_is_current() -> None:
    stale = [
        path.name for path, text in snapshots().items() if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"stale OpenAPI snapshots {stale}: run `{REGENERATE}` and commit docs/api/"


def test_snapshots_cover_the_catalog_and_nothing_else() -> None:
    assert sorted(path.stem for path in SNAPSHOT_DIR.glob("*.json")) == sorted(SERVICE_NAMES)


def test_render_is_stable_and_a_change_is_visible() -> None:
    doc = {"paths": {"/b": {}, "/a": {}}, "openapi": "3.1.0"}
    assert render(doc) == render(json.loads(render(doc)))
    assert render(doc).index('"/a"') < render(doc).index('"/b"')
    assert render(doc) != render({**doc, "paths": {"/a": {}}})
