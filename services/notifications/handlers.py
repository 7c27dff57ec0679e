"""Lifecycle event handlers of the notifications service: thin, they call the units of work."""

from __future__ import annotations

from collections.abc import Sequence

from services.notifications import domain, service
from shared.consumer import BatchContext, Handler
from shared.events import LifecycleEvent

INTERESTED: frozenset[str] = domain.INTERESTED


def make_handler(*, notifier: service.Notifier) -> Handler:
    """The batch handler, bound to the reminder fractions in force."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Record the notifications a batch of new events calls for, in ctx (the batch's unit of work)."""
        await service.apply_events(ctx, events, notifier=notifier)

    return on_lifecycle_events
