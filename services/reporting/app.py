"""Wiring of the reporting service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.reporting import handlers, tables
from services.reporting.settings import ReportingSettings
from shared.reference import ReferenceData
from shared.service import ServiceRuntime, create_http_app

NAME = "reporting"


def create_app(settings: ReportingSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The reporting HTTP app; its lifespan runs the broker, the consumer and the outbox relay."""
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
        title="hazard-dispatch reporting",
        description="Builds supervisors' figures from the lifecycle events.",
    )
