"""Lifecycle event handlers of the dispatch service: thin, they call the domain and the repository."""

from __future__ import annotations

from collections.abc import Sequence

from shared.consumer import BatchContext
from shared.events import LifecycleEvent

INTERESTED: frozenset[str] | None = frozenset({"hazard.reported", "hazard.returned", "hazard.relapsed"})


async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
    """Apply a batch of new (never applied) events inside ctx's transaction."""
    # The dispatch issue fills this in; until then events are recorded as applied and otherwise ignored.
    return
