"""The sealed object format (ops/storage/sealed.py): chunk boundaries, the final flag, and binding to the object id."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ops.storage.errors import IntegrityError
from ops.storage.sealed import Sealer, open_chunks, open_manifest
from shared.crypto import LocalFileKeyProvider


@pytest.fixture
def provider(tmp_path: Path) -> LocalFileKeyProvider:
    return LocalFileKeyProvider(tmp_path / "kek.json")


def _seal(provider: LocalFileKeyProvider, object_id: str, payload: bytes, chunk: int) -> tuple[bytes, bytes]:
    sealer = Sealer(provider, object_id, chunk)
    blocks = [payload[i : i + 7] for i in range(0, len(payload), 7)]
    sealed = b"".join(sealer.seal(blocks))
    return sealed, sealer.manifest("test", {"n": 1})


@pytest.mark.parametrize(("size", "chunks"), [(0, 1), (1, 1), (64, 1), (65, 2), (128, 2), (129, 3)])
def test_round_trip_at_every_boundary(provider: LocalFileKeyProvider, size: int, chunks: int) -> None:
    payload = bytes(range(256))[:size] if size <= 256 else b""
    sealed, raw = _seal(provider, "obj", payload, 64)
    manifest = open_manifest(provider, raw, "obj", "m")
    assert len(manifest.chunks) == chunks
    assert b"".join(open_chunks(manifest, io.BytesIO(sealed), "d")) == payload
    assert manifest.meta == {"n": 1}


def test_a_stream_cut_at_a_chunk_boundary_is_refused_even_with_a_matching_manifest(
    provider: LocalFileKeyProvider,
) -> None:
    """Dropping the last chunk and its manifest entry still fails: the new last chunk was not sealed as final."""
    sealed, raw = _seal(provider, "obj", b"x" * 130, 64)
    manifest = open_manifest(provider, raw, "obj", "m")
    cut = manifest.body | {"chunks": manifest.body["chunks"][:2]}
    forged = type(manifest)(cut, manifest.data_key)
    with pytest.raises(IntegrityError, match="chunk 1 failed authentication"):
        list(open_chunks(forged, io.BytesIO(sealed[: sum(c.sealed_bytes for c in forged.chunks)]), "d"))


def test_chunks_of_another_object_are_refused(provider: LocalFileKeyProvider) -> None:
    sealed_a, raw_a = _seal(provider, "a", b"same bytes" * 20, 64)
    manifest_a = open_manifest(provider, raw_a, "a", "m")
    forged = type(manifest_a)(manifest_a.body | {"object_id": "b"}, manifest_a.data_key)
    with pytest.raises(IntegrityError, match="chunk 0 failed authentication"):
        list(open_chunks(forged, io.BytesIO(sealed_a), "d"))
    with pytest.raises(IntegrityError, match="names object 'a', expected 'b'"):
        open_manifest(provider, raw_a, "b", "m")


def test_a_manifest_under_an_unknown_key_is_named(provider: LocalFileKeyProvider, tmp_path: Path) -> None:
    _, raw = _seal(provider, "obj", b"data", 64)
    other = LocalFileKeyProvider(tmp_path / "other.json")
    with pytest.raises(IntegrityError, match=r"key-encryption key 'kek-.*' is not available"):
        open_manifest(other, raw, "obj", "m")
