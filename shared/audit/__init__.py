"""Tamper-evident audit log: hash-chained, append-only entries written in the caller's transaction, and a verifier."""

from shared.audit.canonical import CanonicalizationError, JsonValue, PlainJson, canonical_json
from shared.audit.log import DEFAULT_CHAIN, GENESIS_HASH, AuditEntry, AuditRecord, append, append_many, chain_hash
from shared.audit.verify import (
    BreakKind,
    BrokenLink,
    VerificationReport,
    list_chains,
    verify_all_chains,
    verify_chain,
)

__all__ = [
    "DEFAULT_CHAIN",
    "GENESIS_HASH",
    "AuditEntry",
    "AuditRecord",
    "BreakKind",
    "BrokenLink",
    "CanonicalizationError",
    "JsonValue",
    "PlainJson",
    "VerificationReport",
    "append",
    "append_many",
    "canonical_json",
    "chain_hash",
    "list_chains",
    "verify_all_chains",
    "verify_chain",
]
