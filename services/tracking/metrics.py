"""Domain metrics of the tracking service (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CASES = Gauge("hazard_tracking_cases", "Cases by state, as of the last count.", ["state"])
REWORK = Counter(
    "hazard_tracking_rework_total", "Failed verifications that sent a case back to rectification."
)
RELAPSES = Counter("hazard_tracking_relapses_total", "New reports detected as relapses of closed cases.")
HOTSPOTS_FLAGGED = Counter(
    "hazard_tracking_hotspots_flagged_total", "Places that reached the hotspot threshold of relapses."
)
RECTIFICATION_ORDERED = Counter(
    "hazard_tracking_rectification_ordered_total", "Rectification orders issued, by round kind.", ["kind"]
)
RECTIFICATION_OVERDUE = Counter(
    "hazard_tracking_rectification_overdue_total", "Rectification deadlines that passed before rectification."
)
RECTIFIED = Counter("hazard_tracking_rectified_total", "Cases marked rectified by their department.")
CLOSED = Counter("hazard_tracking_closed_total", "Cases closed, by reason.", ["reason"])
