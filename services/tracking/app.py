"""Wiring of the tracking service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.tracking import handlers, tables
from services.tracking.settings import TrackingSettings
from shared.reference import ReferenceData
from shared.service import ServiceRuntime, create_http_app

NAME = "tracking"


def create_app(settings: TrackingSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The tracking HTTP app; its lifespan runs the broker, the consumer and the outbox relay."""
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.on_lifecycle_events,
        interested=handlers.INTERESTED,
        reference=reference,
    )
    return create_http_app(
        runtime,
        title="hazard-dispatch tracking",
        description="Follows rectification, verification and closure, and detects relapse.",
    )
