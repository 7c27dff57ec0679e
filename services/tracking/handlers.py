"""Lifecycle event handler of the tracking service: thin, it calls the use case."""

from __future__ import annotations

from collections.abc import Sequence

from services.tracking import service
from shared.consumer import BatchContext, Handler
from shared.events import EVENT_TYPES, LifecycleEvent

# Every type: tracking's own types from anyone else are checked against the case (its own come
# back already in the inbox and are skipped). A historical hazard (hazard.imported, #18) is no
# case, never timed, escalated or notified: only a closed one is kept, for relapse detection.
INTERESTED: frozenset[str] | None = frozenset(EVENT_TYPES)


def make_handler(config: service.TrackingConfig) -> Handler:
    """The batch handler, bound to the tracking configuration."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Apply a batch of new (never applied) events inside ctx's transaction."""
        await service.apply_events(ctx, events, config=config)

    return on_lifecycle_events
