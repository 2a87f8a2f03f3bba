"""Password rules, argon2id hashing and the secret-in-logged-field guard."""

from __future__ import annotations

import pytest

from services.accounts.errors import SecretInLoggedField, WeakPassword
from services.accounts.passwords import (
    check_password_strength,
    hash_password,
    refuse_secret_in_field,
    secret_digest,
    verify_password,
)


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("Short1!", "min_length"),
        ("alllowercaseletters", "character_classes"),
        ("123456789012345", "character_classes"),
        ("xAlice-Smith-2024", "contains_username"),
        ("Password1234", "common_password"),
        ("x" * 300 + "A1", "max_length"),
    ],
)
def test_weak_passwords_name_the_rule(password: str, rule: str) -> None:
    with pytest.raises(WeakPassword) as caught:
        check_password_strength(password, "alice-smith")
    assert caught.value.details["rule"] == rule
    assert caught.value.message.startswith("password:")


def test_a_good_password_passes() -> None:
    check_password_strength("correct horse Battery 9", "alice")


def test_argon2id_hash_verifies_and_unknown_user_is_false() -> None:
    hashed = hash_password("correct horse Battery 9")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse Battery 9")
    assert not verify_password(hashed, "wrong horse Battery 9")
    assert not verify_password(None, "correct horse Battery 9")
    assert not verify_password("not-a-hash", "x")


def test_secrets_in_logged_fields_are_refused() -> None:
    with pytest.raises(SecretInLoggedField):
        refuse_secret_in_field("reason", "rotating, new key: Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA==")
    with pytest.raises(SecretInLoggedField):
        refuse_secret_in_field("label", "hunter2-short", frozenset({secret_digest("hunter2-short")}))
    refuse_secret_in_field("reason", "granting for the Q3 desk rotation", frozenset({secret_digest("x")}))
    refuse_secret_in_field("label", None)
