"""Lifecycle event handlers of the reporting service: parse, call the use case (service.py)."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from services.reporting import service
from shared.consumer import BatchContext, Handler
from shared.events import LifecycleEvent

INTERESTED: frozenset[str] | None = None  # every lifecycle event


def make_handler(*, tz: ZoneInfo) -> Handler:
    """The batch handler: the batch's context is the unit of work ``service.apply_events`` runs on."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Apply a batch of new (never applied) events inside ctx's transaction."""
        await service.apply_events(ctx, events, tz=tz)

    return on_lifecycle_events
