"""R5: startup reconciliation repairs every known divergence between the OMS database and the paper venue.

Each scenario drives an OMS (OrderService on a PaperVenue, as `services/oms/app.py` wires them) into one
divergence, the way it happens in production: a listener that failed, an OMS that was down while the
exchange traded, an answer lost on the way back, a cancel that never arrived, money moved at the venue
only. Then a NEW OMS incarnation (new engines, paper venue restored from its tables) runs `reconcile()`,
and the scenario asserts the repair, that the OMS database and the venue's books agree again
(`divergences`: orders, fills, ledger totals, reservations, positions), and that a second `reconcile()`
changes nothing. The market of each scenario is its own instrument, so that scenarios never fill each
other's resting orders; each scenario module has a database of its own, because `reconcile()` walks every
account.

The scenarios: test_r5_reconcile_fills.py (fills and balances), test_r5_reconcile_ledger.py (fills during the
balance read, half-done deposits, quarantined fills) and test_r5_reconcile_orders.py (order states), on the
harness in r5_scenario.py. This module, the last of R5 in file order, writes the record
`{"id": "R5-reconcile", "cases": N, "passing": N, "violations": 0}`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.r5_scenario import PASSED
from tests.reliability.test_r5_reconcile_fills import SCENARIOS as FILL_SCENARIOS
from tests.reliability.test_r5_reconcile_ledger import SCENARIOS as LEDGER_SCENARIOS
from tests.reliability.test_r5_reconcile_orders import SCENARIOS as ORDER_SCENARIOS

pytestmark = pytest.mark.slow

SCENARIOS = [*FILL_SCENARIOS, *LEDGER_SCENARIOS, *ORDER_SCENARIOS]


async def test_r5_record(reliability_seed: int, write_reliability_record: Callable[[dict[str, Any]], Path]) -> None:
    """Runs after the scenarios (file order: _fills, _ledger, _orders, then this module): N/N passing."""
    passing = sum(PASSED.get(name, False) for name in SCENARIOS)
    failing = sorted(name for name in SCENARIOS if not PASSED.get(name, False))
    write_reliability_record(
        {
            "id": "R5-reconcile",
            "seed": reliability_seed,
            "cases": len(SCENARIOS),
            "passing": passing,
            "violations": len(SCENARIOS) - passing,
            "failing": failing,
        }
    )
    assert failing == []
