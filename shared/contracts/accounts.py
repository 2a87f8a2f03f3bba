"""The accounts service's events on `accounts.account-events.v1` (aggregate and key: the changed user, account or
service identity). Each is the audit entry's details plus `actor` and `target`; no secret ever travels here."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from shared.auth.roles import Role
from shared.contracts.base import Identifier, Message, Text

Actor = Annotated[str, Field(min_length=1, max_length=256)]
Target = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class AccountKind(StrEnum):
    COMPANY = "company"
    DIRECTOR = "director"


class VenueName(StrEnum):
    PAPER = "paper"
    KRAKEN = "kraken"
    BINANCE = "binance"
    COINBASE = "coinbase"


class AccountsEvent(Message):
    """Who changed what."""

    actor: Actor
    target: Target


class UserCreated(AccountsEvent):
    TYPE = "UserCreated"

    username: Name
    roles: list[Role]


class UserRolesSet(AccountsEvent):
    TYPE = "UserRolesSet"

    previous: list[Role]
    roles: list[Role]
    reason: Text | None


class GrantAdded(AccountsEvent):
    TYPE = "GrantAdded"

    account_id: Identifier
    reason: Text | None


class GrantRevoked(AccountsEvent):
    TYPE = "GrantRevoked"

    account_id: Identifier


class AccountCreated(AccountsEvent):
    TYPE = "AccountCreated"

    name: Name
    kind: AccountKind
    venue: VenueName


class CredentialsStored(AccountsEvent):
    TYPE = "CredentialsStored"

    key_id: Annotated[str, Field(min_length=1, max_length=128)]
    fingerprint: Annotated[str, Field(min_length=1, max_length=128)]
    label: Text | None


class ServiceIdentityCreated(AccountsEvent):
    TYPE = "ServiceIdentityCreated"

    name: Name
    scopes: list[Annotated[str, Field(min_length=1, max_length=128)]]
    accounts: list[Annotated[str, Field(min_length=1, max_length=64)]]  # account ids or "*"


ACCOUNT_EVENTS: tuple[type[AccountsEvent], ...] = (
    UserCreated,
    UserRolesSet,
    GrantAdded,
    GrantRevoked,
    AccountCreated,
    CredentialsStored,
    ServiceIdentityCreated,
)
