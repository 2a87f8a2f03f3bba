"""Ed25519 signing keys for bearer tokens: generate, write as PEM, load, fingerprint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_KEY_FILE = "private.pem"
PUBLIC_KEY_FILE = "public.pem"
PRIVATE_KEY_MODE = 0o600
PUBLIC_KEY_MODE = 0o644


class InvalidKey(ValueError):
    """The PEM is unreadable or not an Ed25519 key of the expected kind."""


@dataclass(frozen=True, slots=True)
class KeyPairFiles:
    private_path: Path
    public_path: Path
    fingerprint: str


def generate_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (protect the file, not the bytes)."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _as_bytes(pem: bytes | str) -> bytes:
    return pem.encode("ascii") if isinstance(pem, str) else pem


def load_private_key(pem: bytes | str) -> Ed25519PrivateKey:
    """Parse a PEM private key; raise InvalidKey unless it is Ed25519."""
    try:
        key = serialization.load_pem_private_key(_as_bytes(pem), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidKey("not a readable unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidKey("the private key is not Ed25519")
    return key


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    """Parse a PEM public key; raise InvalidKey unless it is Ed25519."""
    try:
        key = serialization.load_pem_public_key(_as_bytes(pem))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise InvalidKey("not a readable PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidKey("the public key is not Ed25519")
    return key


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the token header's `kid`."""
    raw = key.public_bytes(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    # RFC 7638: the required members only, sorted, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _write_file(path: Path, content: bytes, mode: int, *, force: bool) -> None:
    # Written to a temporary file with its final mode first, then renamed: never a moment with looser permissions.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        if force:
            os.replace(tmp_name, path)
        else:
            os.link(tmp_name, path)  # fails with FileExistsError if the path appeared meanwhile
            os.unlink(tmp_name)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_key_pair(out_dir: Path, *, force: bool = False, key: Ed25519PrivateKey | None = None) -> KeyPairFiles:
    """Write `private.pem` (0600) and `public.pem` (0644) into `out_dir`; refuse to overwrite unless `force`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / PRIVATE_KEY_FILE
    public_path = out_dir / PUBLIC_KEY_FILE
    if not force:
        existing = [path for path in (private_path, public_path) if path.exists() or path.is_symlink()]
        if existing:
            raise FileExistsError(f"{existing[0]} already exists")
    private_key = key or generate_private_key()
    _write_file(private_path, private_key_pem(private_key), PRIVATE_KEY_MODE, force=force)
    _write_file(public_path, public_key_pem(private_key.public_key()), PUBLIC_KEY_MODE, force=force)
    return KeyPairFiles(private_path, public_path, key_fingerprint(private_key.public_key()))


def load_private_key_file(path: Path) -> Ed25519PrivateKey:
    """Read and parse a PEM private key file."""
    return load_private_key(path.read_bytes())


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    """Read and parse a PEM public key file."""
    return load_public_key(path.read_bytes())
