"""Prometheus metrics of the intake service (labels bounded by the reference data and fixed code lists)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACCEPTED = Counter(
    "hazard_intake_reports_accepted_total",
    "Reports accepted and committed, by category and source (app, batch, open311).",
    ["category", "source"],
)
REPLAYED = Counter(
    "hazard_intake_reports_replayed_total",
    "Reports sent again under a known report_id with the same body (answered with the stored hazard).",
    ["source"],
)
REJECTED = Counter(
    "hazard_intake_reports_rejected_total",
    "Reports refused, by reason (error code).",
    ["reason"],
)
DUPLICATES_LINKED = Counter(
    "hazard_intake_duplicates_linked_total",
    "Reports linked to an open hazard of the same category at the same place, by category.",
    ["category"],
)
DUPLICATES_UNLINKED = Counter(
    "hazard_intake_duplicates_unlinked_total",
    "Duplicate links undone because the report was observed after its original's closure, by category.",
    ["category"],
)
RECTIFIED_ON_SITE = Counter(
    "hazard_intake_rectified_on_site_total",
    "Reports of hazards fixed on the spot, by category.",
    ["category"],
)
RATE_LIMITED = Counter("hazard_intake_rate_limited_total", "Requests refused by the per-reporter rate limit.")
COMMIT_SECONDS = Histogram(
    "hazard_intake_commit_seconds",
    "Time to validate, link and durably commit one request's reports (single or batch).",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

UNDECIDED = Gauge(
    "hazard_intake_undecided_reports",
    "Accepted reports with no dispatch decision (dispatched, referred to operators, linked as a "
    "duplicate, rectified on site) for longer than the reconciliation threshold.",
)
UNDECIDED_OLDEST = Gauge(
    "hazard_intake_undecided_oldest_seconds",
    "Age of the oldest accepted report still without a dispatch decision (0: none).",
)
