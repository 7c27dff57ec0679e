"""Lifecycle event handlers of the dispatch service: thin, they call the use cases."""

from __future__ import annotations

from collections.abc import Sequence

from services.dispatch import service
from shared.consumer import BatchContext, Handler
from shared.events import LifecycleEvent
from shared.reference import ReferenceData

# hazard.returned is published by dispatch itself, which re-routes in the same transaction as the
# return; consuming it back would only repeat that work.
INTERESTED: frozenset[str] | None = frozenset(
    {"hazard.reported", "hazard.duplicate_unlinked", "hazard.relapsed"}
)


def make_handler(reference: ReferenceData) -> Handler:
    """The batch handler, bound to the reference data the service routes by."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Apply a batch of new (never applied) events inside ctx's transaction (its unit of work)."""
        await service.apply_events(ctx, reference, events)

    return on_lifecycle_events
