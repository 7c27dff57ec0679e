"""Wiring of the dispatch service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch import handlers, tables
from services.dispatch.settings import DispatchSettings
from shared.reference import ReferenceData
from shared.service import ServiceRuntime, create_http_app

NAME = "dispatch"


def create_app(settings: DispatchSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The dispatch HTTP app; its lifespan runs the broker, the consumer and the outbox relay."""
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
        title="hazard-dispatch dispatch",
        description="Routes each hazard to a department and holds it to its receipt deadline.",
    )
