"""Lifecycle event handlers of the intake service: thin, they keep the Open311 view current.

The work is :func:`services.intake.service.apply_lifecycle_events`, on the batch's unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.intake import service
from shared.consumer import BatchContext, Handler
from shared.events import LifecycleEvent
from shared.reference import ReferenceData

INTERESTED: frozenset[str] | None = frozenset(
    {
        "hazard.dispatched",
        "hazard.referred_to_operators",
        "hazard.acknowledged",
        "hazard.returned",
        "hazard.rectification_ordered",
        "hazard.rectified",
        "hazard.verified",
        "hazard.closed",
        "hazard.relapsed",
    }
)


def make_handler(reference: ReferenceData) -> Handler:
    """The batch handler, bound to the reference data that names departments."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Apply a batch of new (never applied) events inside ctx's transaction."""
        await service.apply_lifecycle_events(ctx, events, reference=reference)

    return on_lifecycle_events
