"""Domain metrics of the OMS (registered once on the process registry)."""

from __future__ import annotations

from shared.observability.metrics import counter, gauge, histogram

ORDER_TRANSITIONS = counter(
    "aether_oms_order_transitions_total", "Order state transitions, by the event that made them", ["event"]
)
SUBMIT_TO_ACK = histogram(
    "aether_oms_submit_to_ack_seconds", "Time from sending an order to the venue until its answer"
)
SUBMIT_TO_FILL = histogram(
    "aether_oms_submit_to_fill_seconds", "Time from recording an order until each of its fills is applied"
)
VENUE_ERRORS = counter(
    "aether_oms_venue_errors_total", "Venue calls that failed, by operation and error type", ["operation", "kind"]
)
FILLS_QUARANTINED = counter(
    "aether_oms_fills_quarantined_total",
    "Venue fills set aside because the order state machine or the ledger refused them (alert on any increase)",
    ["reason"],
)
RECONCILIATION_RUNS = counter(
    "aether_oms_reconciliation_runs_total",
    "Reconciliation runs with the venue by kind (startup, not_ready, sweep) and outcome (ok, drift: something was "
    "repaired, error: some order or account could not be checked)",
    ["kind", "outcome"],
)
RECONCILIATION_LAST_SUCCESS = gauge(
    "aether_oms_reconciliation_last_success_timestamp_seconds",
    "Unix time of the last reconciliation run of this kind that completed (ok or drift)",
    ["kind"],
)
