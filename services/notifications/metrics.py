"""Domain metrics of the notifications service (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERY_ATTEMPTS = Counter(
    "hazard_notifications_deliveries_total",
    "Delivery attempts by channel and result: sent, retrying (failed, will be tried again), failed (given up).",
    ["channel", "result"],
)
LATENCY = Histogram(
    "hazard_notifications_delivery_latency_seconds",
    "From the event (or the reminder's due time) to the receiver accepting the notification.",
    ["channel"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
DELIVERIES = Gauge(
    "hazard_notifications_deliveries_by_status", "Deliveries by status, as of the last count.", ["status"]
)
REMINDERS_FIRED = Counter("hazard_notifications_reminders_fired_total", "Reminders (催办) that came due.")
