"""Lifecycle event handlers of the reporting service: thin, they call the domain and the repository."""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from services.reporting import domain, repository
from shared.consumer import BatchContext, Handler
from shared.events import LifecycleEvent

INTERESTED: frozenset[str] | None = None  # every lifecycle event


def make_handler(*, tz: ZoneInfo) -> Handler:
    """The batch handler: fold the events into fact rows, merge them, mark their days for the rollup."""

    async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        """Apply a batch of new (never applied) events inside ctx's transaction."""
        batch = domain.project_events(events, tz=tz)
        await repository.upsert_facts(ctx.session, batch)
        await repository.mark_dirty(ctx.session, batch.touched_hazards())

    return on_lifecycle_events
