"""Wiring of the intake service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.intake import handlers, tables
from services.intake.settings import IntakeSettings
from shared.reference import ReferenceData
from shared.service import ServiceRuntime, create_http_app

NAME = "intake"


def create_app(settings: IntakeSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The intake HTTP app; its lifespan runs the broker, the consumer and the outbox relay."""
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.on_lifecycle_events,
        interested=handlers.INTERESTED,
        reference=reference,
    )
    # Reports are accepted into the outbox while the broker is away, so intake stays ready without it.
    runtime.ready_without_broker = True
    return create_http_app(
        runtime,
        title="hazard-dispatch intake",
        description="Takes hazard reports (single, offline batches, Open311 GeoReport v2) and publishes them, losing nothing.",
    )
