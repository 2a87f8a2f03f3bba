"""Domain metrics of the OMS (registered once on the process registry)."""

from __future__ import annotations

from shared.observability.metrics import counter, histogram

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
