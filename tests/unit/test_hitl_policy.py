"""Pure rules of the approval service: which requests need a director, the payload hash, fresh TOTP."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.hitl.consumers import request_from_event
from services.hitl.errors import FreshOtpRequired
from services.hitl.policy import (
    ApprovalFacts,
    PolicyRules,
    RequestKind,
    canonical_payload,
    needs_approval,
    payload_hash,
    weakened_rules,
)
from services.hitl.service import ensure_fresh_otp
from shared.auth.roles import Role
from shared.auth.tokens import Principal, freeze_grants
from shared.contracts.approvals import ApprovalReason, LimitRaiseApprovalRequested, SubjectType
from shared.contracts.base import outbox_payload
from shared.contracts.registry import new_envelope
from shared.contracts.risk import RiskLimitsValue
from shared.events import Envelope

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def test_order_above_threshold_new_instrument_and_low_confidence() -> None:
    rules = PolicyRules(notional_threshold=Decimal(1000), model_confidence_min=Decimal("0.7"))
    facts = ApprovalFacts(
        kind=RequestKind.ORDER, notional=Decimal(1000), instrument_known=False, model_confidence=Decimal("0.69")
    )
    assert needs_approval(rules, facts) == [
        ApprovalReason.NOTIONAL_ABOVE_THRESHOLD,
        ApprovalReason.NEW_INSTRUMENT,
        ApprovalReason.LOW_MODEL_CONFIDENCE,
    ]


def test_small_known_confident_order_needs_nothing() -> None:
    rules = PolicyRules(notional_threshold=Decimal(1000), model_confidence_min=Decimal("0.7"))
    facts = ApprovalFacts(
        kind=RequestKind.ORDER, notional=Decimal("999.99"), instrument_known=True, model_confidence=Decimal("0.7")
    )
    assert needs_approval(rules, facts) == []


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (ApprovalFacts(kind=RequestKind.HEDGE_OVERRIDE), [ApprovalReason.HEDGE_OVERRIDE]),
        (ApprovalFacts(kind=RequestKind.RESUME, from_state="halted"), [ApprovalReason.RESUME_FROM_HALTED]),
        (ApprovalFacts(kind=RequestKind.RESUME, from_state="reducing"), []),
        (ApprovalFacts(kind=RequestKind.LIMITS, limit_raised=True), [ApprovalReason.LIMIT_RAISE]),
        (ApprovalFacts(kind=RequestKind.LIMITS, limit_raised=False), []),
    ],
)
def test_non_order_rules(facts: ApprovalFacts, expected: list[ApprovalReason]) -> None:
    assert needs_approval(PolicyRules(), facts) == expected


def test_rules_can_be_switched_off() -> None:
    rules = PolicyRules(hedge_override=False, resume_from_halted=False, limit_raise=False, new_instrument=False)
    for facts in (
        ApprovalFacts(kind=RequestKind.HEDGE_OVERRIDE),
        ApprovalFacts(kind=RequestKind.RESUME, from_state="halted"),
        ApprovalFacts(kind=RequestKind.LIMITS, limit_raised=True),
        ApprovalFacts(kind=RequestKind.ORDER, instrument_known=False),
    ):
        assert needs_approval(rules, facts) == []


def test_quorum_must_be_reachable_with_the_listed_directors() -> None:
    with pytest.raises(ValidationError, match="quorum"):
        PolicyRules(quorum=3, directors=["a", "b"])
    assert PolicyRules(quorum=2, directors=["a", "b"]).quorum == 2
    with pytest.raises(ValidationError, match="extra"):
        PolicyRules.model_validate({"quorum": 1, "unknown": True})


def test_payload_hash_is_sha256_of_rfc8785_canonical_json() -> None:
    payload = {"b": "2", "a": [1, None, "x"], "é": 1.5}
    canonical = canonical_payload(payload)
    assert canonical == '{"a":[1,null,"x"],"b":"2","é":1.5}'
    assert payload_hash(payload) == hashlib.sha256(canonical.encode()).hexdigest()
    assert payload_hash({"é": 1.5, "a": [1, None, "x"], "b": "2"}) == payload_hash(payload)
    assert payload_hash({**payload, "b": "3"}) != payload_hash(payload)


def _principal(amr: set[str], auth_time: datetime | None) -> Principal:
    return Principal(
        subject="d",
        roles=frozenset({Role.DIRECTOR}),
        scopes=frozenset(),
        grants=freeze_grants({Role.DIRECTOR: {"*"}}),
        token_id="t",
        expires_at=NOW + timedelta(minutes=5),
        amr=frozenset(amr),
        auth_time=auth_time,
    )


def test_fresh_otp_is_required_within_120_seconds() -> None:
    ensure_fresh_otp(_principal({"pwd", "otp"}, NOW - timedelta(seconds=120)), NOW, 120)
    for principal in (
        _principal({"pwd", "otp"}, NOW - timedelta(seconds=121)),
        _principal({"pwd"}, NOW),
        _principal({"pwd", "otp"}, None),
    ):
        with pytest.raises(FreshOtpRequired):
            ensure_fresh_otp(principal, NOW, 120)


def test_weakened_rules_names_every_loosening() -> None:
    strict = PolicyRules(
        notional_threshold=Decimal(1000), model_confidence_min=Decimal("0.8"), quorum=2, directors=["a", "b"]
    )
    assert weakened_rules(strict, strict) == []
    stricter = strict.model_copy(update={"notional_threshold": Decimal(500), "quorum": 2, "expiry_s": 60})
    assert weakened_rules(strict, stricter) == []
    cases = {
        "notional_threshold": {"notional_threshold": None},
        "model_confidence_min": {"model_confidence_min": Decimal("0.5")},
        "new_instrument": {"new_instrument": False},
        "hedge_override": {"hedge_override": False},
        "resume_from_halted": {"resume_from_halted": False},
        "limit_raise": {"limit_raise": False},
        "quorum": {"quorum": 1},
        "directors": {"directors": ["a", "c"]},
        "expiry_s": {"expiry_s": 7200},
    }
    for name, update in cases.items():
        assert weakened_rules(strict, strict.model_copy(update=update)) == [name], name


def test_the_risk_services_approval_requests_open_hitl_requests() -> None:
    limits = {"max_order_notional": "1000000000"}
    message = LimitRaiseApprovalRequested(
        subject_type=SubjectType.LIMIT_RAISE,
        subject_id="limits:acc-1:ab",
        account_id="acc-1",
        requested_by="rita",
        limits=RiskLimitsValue.model_validate(limits),
        previous=RiskLimitsValue.model_validate({"max_order_notional": "1000"}),
        raised=["max_order_notional"],
        reason="raise",
    )
    envelope = new_envelope(message, producer="risk", aggregate_id="acc-1")
    new = request_from_event(Envelope.from_bytes(envelope.to_bytes()))
    assert new is not None
    assert (new.subject_type, new.requested_by, new.payload) == ("limit_raise", "rita", outbox_payload(message))
