"""Lifecycle event handlers of the intake service: thin, they keep the Open311 view current.

A closure also undoes the duplicate link of reports observed after it (hazard.duplicate_unlinked).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.intake import domain, metrics
from services.intake import repository as repo
from shared.consumer import BatchContext, Handler
from shared.db import after_commit
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
        changes = []
        for event in events:
            change = domain.status_change(event, reference=reference)
            if change is not None:
                changes.append((event.hazard_id, change, event.occurred_at))
        unlinked = await repo.apply_status_changes(ctx.session, changes)
        # A report observed after its original's closure goes on as a hazard of its own.
        await ctx.outbox.add(ctx.session, *(domain.unlinked_event(u, now=ctx.now) for u in unlinked))
        if unlinked:
            # Counted once committed (a batch that fails is retried and must not count twice).
            after_commit(ctx.session, lambda: _count(unlinked))

    return on_lifecycle_events


def _count(unlinked: Sequence[domain.Unlinked]) -> None:
    for u in unlinked:
        metrics.DUPLICATES_UNLINKED.labels(u.category).inc()
