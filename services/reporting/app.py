"""Wiring of the reporting service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.admin import api as admin_api
from services.reporting import api, handlers, people, service, tables
from services.reporting.repository import ReportingRepository
from services.reporting.settings import ReportingSettings, refresh_pause_s
from shared.reference import ReferenceData, load_reference_data
from shared.service import ServiceRuntime, create_http_app

NAME = "reporting"
log = logging.getLogger(__name__)


def create_app(settings: ReportingSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The reporting HTTP app; its lifespan runs the broker, the consumer and the refresh loops."""
    reference = reference or load_reference_data(settings.reference_data_dir)
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.make_handler(tz=ZoneInfo(reference.calendar.timezone)),
        interested=handlers.INTERESTED,
        reference=reference,
        repository=ReportingRepository,
    )

    async def refresh_rollup() -> None:
        async with runtime.work() as uow:
            await service.refresh_rollup(uow)

    async def refresh_gauges() -> None:
        # The gauges read the rollup, so bring it up to date first.
        await refresh_rollup()
        async with runtime.work() as uow:
            await service.refresh_gauges(
                uow, reference=reference, window_days=settings.projection.metrics_window_days
            )

    # The rollup of days touched by new events, every few seconds, paced by its cost (a deadlock
    # or a database away: the next round retries); the Prometheus domain gauges.
    runtime.every(
        lambda took: refresh_pause_s(settings.projection, took), refresh_rollup, what="rollup refresh"
    )
    runtime.every(settings.projection.metrics_refresh_s, refresh_gauges, what="domain gauges refresh")
    app = create_http_app(
        runtime,
        title="hazard-dispatch reporting",
        description="Builds supervisors' figures and the dashboard from the lifecycle events.",
    )
    app.include_router(api.router)
    app.include_router(people.router)
    # Runtime administration (services/admin): reporting's role is the one that writes the admin schema.
    app.include_router(admin_api.router)
    app.include_router(admin_api.page_router)
    app.mount("/admin-static", StaticFiles(directory=admin_api.STATIC_DIR), name="admin-static")
    app.mount("/static", StaticFiles(directory=api.STATIC_DIR), name="static")
    return app
