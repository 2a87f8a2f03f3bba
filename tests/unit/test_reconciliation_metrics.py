"""Reconciliation runs are counted by kind and outcome; a completed run (ok or drift) moves the last-success time."""

from __future__ import annotations

import time

import pytest

from services.oms.use_cases.reconciliation import (
    ReconcileReport,
    ResolveOutcome,
    RunKind,
    RunOutcome,
    record_run,
    sweep_outcome,
)
from shared.observability.metrics import REGISTRY


def _runs(kind: RunKind, outcome: RunOutcome) -> float:
    labels = {"kind": kind.value, "outcome": outcome.value}
    return REGISTRY.get_sample_value("aether_oms_reconciliation_runs_total", labels) or 0.0


def _last_success(kind: RunKind) -> float | None:
    return REGISTRY.get_sample_value("aether_oms_reconciliation_last_success_timestamp_seconds", {"kind": kind.value})


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([], RunOutcome.OK),
        ([ResolveOutcome.IN_SYNC, ResolveOutcome.SETTLED], RunOutcome.OK),
        ([ResolveOutcome.IN_SYNC, ResolveOutcome.APPLIED], RunOutcome.DRIFT),
        ([ResolveOutcome.RESUBMITTED], RunOutcome.DRIFT),
        ([ResolveOutcome.APPLIED, ResolveOutcome.VENUE_UNAVAILABLE], RunOutcome.ERROR),
    ],
)
def test_a_sweep_is_ok_drift_or_error_from_its_orders(outcomes: list[ResolveOutcome], expected: RunOutcome) -> None:
    assert sweep_outcome(outcomes) is expected


def test_a_report_drifted_only_when_it_repaired_something() -> None:
    assert not ReconcileReport(deposits_completed=2, accounts_by_venue={"paper": 3}).drifted()
    assert ReconcileReport(fills_applied=1).drifted()
    assert ReconcileReport(balance_adjustments=1).drifted()


def test_only_a_completed_run_moves_the_last_success() -> None:
    kind = RunKind.NOT_READY
    errors_before = _runs(kind, RunOutcome.ERROR)
    record_run(kind, RunOutcome.DRIFT)
    succeeded_at = _last_success(kind)
    assert succeeded_at is not None
    assert abs(succeeded_at - time.time()) < 60
    record_run(kind, RunOutcome.ERROR)
    assert _runs(kind, RunOutcome.ERROR) == errors_before + 1
    assert _last_success(kind) == succeeded_at
