"""`aether auth`: create the token signing key pair and mint bearer tokens (e.g. the bootstrap admin token)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shared.auth.keys import write_key_pair
from shared.auth.roles import Role, default_scopes
from shared.auth.signing import TokenSigningSettings
from shared.auth.tokens import TokenIssuer
from shared.config import ConfigurationError, load_settings

app = typer.Typer(help="Token signing keys and bearer tokens.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@app.command()
def keygen(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for private.pem (0600) and public.pem.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key pair.")] = False,
) -> None:
    """Generate an Ed25519 key pair; print the public key path and its fingerprint (never the private key)."""
    try:
        files = write_key_pair(out_dir, force=force)
    except FileExistsError as exc:
        raise _fail(f"{exc}; pass --force to replace the key pair") from None
    except OSError as exc:
        raise _fail(f"cannot write keys into {out_dir}: {exc.strerror}") from None
    typer.echo(f"public key: {files.public_path}")
    typer.echo(f"fingerprint: {files.fingerprint}")


def _private_key_pem(private_key_file: Path | None, settings: TokenSigningSettings) -> bytes:
    if private_key_file is not None:
        try:
            return private_key_file.read_bytes()
        except OSError as exc:
            raise _fail(f"cannot read {private_key_file}: {exc.strerror}") from None
    if settings.jwt_private_key is None:
        raise _fail("no signing key: pass --private-key-file or set AETHER_JWT_PRIVATE_KEY(_FILE)")
    return settings.jwt_private_key.get_secret_value().encode()


@app.command()
def token(
    subject: Annotated[str, typer.Option("--subject", help="The `sub` claim (user or service id).")],
    role: Annotated[list[Role], typer.Option("--role", help="Role to grant (repeatable).")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Scope to grant (repeatable).")] = None,
    account: Annotated[
        list[str] | None, typer.Option("--account", help="Trading account to grant (repeatable; '*' for all).")
    ] = None,
    # On by default: every route checks a scope as well as a role, so a token without them reaches nothing.
    default_role_scopes: Annotated[
        bool,
        typer.Option("--default-scopes/--no-default-scopes", help="Also grant the default scopes of the roles."),
    ] = True,
    ttl_s: Annotated[int, typer.Option("--ttl-s", min=1, help="Lifetime in seconds.")] = 900,
    private_key_file: Annotated[
        Path | None, typer.Option("--private-key-file", help="PEM private key (default: AETHER_JWT_PRIVATE_KEY).")
    ] = None,
    issuer: Annotated[str | None, typer.Option("--issuer", help="Default: AETHER_JWT_ISSUER.")] = None,
    audience: Annotated[str | None, typer.Option("--audience", help="Default: AETHER_JWT_AUDIENCE.")] = None,
) -> None:
    """Print a signed bearer token on stdout (nothing else goes to stdout)."""
    try:
        settings = load_settings(TokenSigningSettings)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    scopes = set(scope or ())
    if default_role_scopes:
        scopes |= default_scopes(role)
    try:
        issuer_ = TokenIssuer(
            _private_key_pem(private_key_file, settings),
            issuer=issuer or settings.jwt_issuer,
            audience=audience or settings.jwt_audience,
        )
        signed = issuer_.issue(subject, role, scopes=scopes, accounts=account or (), ttl_s=ttl_s)
    except ValueError as exc:  # InvalidKey included
        raise _fail(str(exc)) from None
    typer.echo(signed)


if __name__ == "__main__":
    app()
