"""Prometheus metrics of the dispatch service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DISPATCHES = Counter(
    "hazard_dispatch_dispatches_total",
    "Dispatches created, by department, category and reason (routed, rerouted, reassigned).",
    ["department", "category", "reason"],
)
REFERRALS = Counter(
    "hazard_dispatch_referred_to_operators_total",
    "Hazards sent to the operators' queue, by reason.",
    ["reason"],
)
PENDING = Gauge(
    "hazard_dispatch_pending", "Dispatches waiting for acknowledgement, by department.", ["department"]
)
OVERDUE = Gauge(
    "hazard_dispatch_overdue",
    "Dispatches past their receipt deadline and not acknowledged, by department.",
    ["department"],
)
OPERATOR_QUEUE = Gauge("hazard_dispatch_operator_queue", "Hazards waiting in the operators' queue.")
TIME_TO_ACKNOWLEDGE = Histogram(
    "hazard_dispatch_time_to_acknowledge_seconds",
    "Time from dispatch to acknowledgement, by department.",
    ["department"],
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800),
)
ACKNOWLEDGED = Counter(
    "hazard_dispatch_acknowledged_total",
    "Acknowledgements, by department and on_time.",
    ["department", "on_time"],
)
RECEIPT_OVERDUE = Counter(
    "hazard_dispatch_receipt_overdue_total",
    "Receipt deadlines passed unacknowledged, by department.",
    ["department"],
)
ESCALATIONS = Counter("hazard_dispatch_escalations_total", "Escalation steps fired, by level.", ["level"])
TIMER_LATENESS = Histogram(
    "hazard_dispatch_timer_lateness_seconds",
    "How long after its due time a timer fired.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
