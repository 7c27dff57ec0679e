"""Lifecycle event handlers of the reporting service: thin, they call the domain and the repository."""

from __future__ import annotations

from collections.abc import Sequence

from shared.consumer import BatchContext
from shared.events import LifecycleEvent

INTERESTED: frozenset[str] | None = None


async def on_lifecycle_events(ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
    """Apply a batch of new (never applied) events inside ctx's transaction."""
    # The reporting issue fills this in; until then events are recorded as applied and otherwise ignored.
    return
