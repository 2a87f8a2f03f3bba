"""Reading and writing the Redis mirror values of `shared/mirror_keys.py` through their contract models."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from shared.contracts.base import ContractViolation, MirrorValue

ValueT = TypeVar("ValueT", bound=BaseModel)


def encode_mirror(value: BaseModel) -> str:
    """The Redis value of `value` (a MirrorValue's own form; other contract models as JSON)."""
    if isinstance(value, MirrorValue):
        return value.to_mirror()
    return value.model_dump_json()


def decode_mirror(model: type[ValueT], raw: bytes | str) -> ValueT:
    """Parse a Redis value as `model`; ContractViolation (with the reason) for junk, never a default."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
        if issubclass(model, MirrorValue):
            return model.parse_mirror(text)
        return model.model_validate_json(text)
    except UnicodeDecodeError:
        raise ContractViolation(f"{model.__name__}: the Redis value is not UTF-8") from None
    except ValidationError as exc:
        raise ContractViolation.from_validation(model.__name__, exc) from None
