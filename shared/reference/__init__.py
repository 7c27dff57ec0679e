"""Reference data of one street: departments, categories, places, routing, campaigns, calendar."""

from __future__ import annotations

from shared.reference.calendar import add_deadline, is_working_day
from shared.reference.errors import ReferenceDataError, UnknownReference
from shared.reference.geo import haversine_m, point_in_polygon
from shared.reference.loader import PACKAGED_DATA_DIR, load_reference_data
from shared.reference.models import (
    OPERATORS_QUEUE,
    URGENCY_LEVELS,
    BoundingBox,
    Calendar,
    Campaign,
    CampaignTargets,
    Category,
    CategoryGroup,
    Community,
    DeadlineRule,
    Department,
    EscalationStep,
    EscalationTarget,
    Grid,
    Holiday,
    MakeUpDay,
    Point,
    ReferenceData,
    RoutingRule,
    Street,
    Thresholds,
    Urgency,
    UrgencyRule,
    WorkingInterval,
)

__all__ = [
    "OPERATORS_QUEUE",
    "PACKAGED_DATA_DIR",
    "URGENCY_LEVELS",
    "BoundingBox",
    "Calendar",
    "Campaign",
    "CampaignTargets",
    "Category",
    "CategoryGroup",
    "Community",
    "DeadlineRule",
    "Department",
    "EscalationStep",
    "EscalationTarget",
    "Grid",
    "Holiday",
    "MakeUpDay",
    "Point",
    "ReferenceData",
    "ReferenceDataError",
    "RoutingRule",
    "Street",
    "Thresholds",
    "UnknownReference",
    "Urgency",
    "UrgencyRule",
    "WorkingInterval",
    "add_deadline",
    "haversine_m",
    "is_working_day",
    "load_reference_data",
    "point_in_polygon",
]
