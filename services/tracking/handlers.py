"""Lifecycle event handlers of the tracking service: thin, they call the units of work."""

from __future__ import annotations

from collections.abc import Sequence

from services.tracking import repository, service, tables
from shared.consumer import BatchContext, Handler
from shared.events import EVENT_TYPES, HazardNotified, LifecycleEvent
from shared.reference import ReferenceData

# Every type: tracking's own types from anyone else are checked against the case (its own come
# back already in the inbox and are skipped).
# A historical hazard (hazard.imported, #18) is no case: never timed, escalated or notified.
INTERESTED: frozenset[str] | None = frozenset(EVENT_TYPES) - {"hazard.imported"}


def make_handler(*, reference: ReferenceData, relapse_distance_m: float | None) -> Handler:
    """The batch handler, bound to the reference data and relapse distance in force."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Apply a batch of new (never applied) events inside ctx's transaction."""
        # Delivery records go beside the timeline; they change nothing of the case.
        notified = [e for e in events if isinstance(e, HazardNotified)]
        lifecycle = [e for e in events if not isinstance(e, HazardNotified)]
        await repository.add_notifications(ctx.session, notified)
        if lifecycle:
            work = service.Casework(
                reference=reference,
                inbox=tables.inbox,
                outbox=ctx.outbox,
                relapse_distance_m=relapse_distance_m,
            )
            await service.apply_events(ctx.session, lifecycle, now=ctx.now, work=work, reject=ctx.reject)

    return on_lifecycle_events
