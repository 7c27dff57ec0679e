"""Wiring of the reporting service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.admin import api as admin_api
from services.reporting import api, handlers, metrics, people, repository, tables
from services.reporting.settings import ReportingSettings, refresh_pause_s
from shared.reference import ReferenceData, load_reference_data
from shared.service import ServiceRuntime, create_http_app, repeat_every

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
    )

    async def refresh_rollup_once() -> None:
        async with runtime.sessions() as session, session.begin():
            await repository.refresh_rollup(session)

    async def refresh_gauges_once() -> None:
        # The gauges read the rollup, so bring it up to date first.
        await refresh_rollup_once()
        async with runtime.sessions() as session:
            await metrics.refresh_domain_gauges(
                session,
                reference=reference,
                now=datetime.now(UTC),
                window_days=settings.projection.metrics_window_days,
            )

    async def refresh_rollup() -> None:
        """Recompute the rollup of days touched by new events, every few seconds, paced by its cost."""
        # A deadlock or a database away: the next round retries.
        await repeat_every(
            lambda took: refresh_pause_s(settings.projection, took),
            refresh_rollup_once,
            what="rollup refresh",
        )

    async def refresh_gauges() -> None:
        """Keep the Prometheus domain gauges current."""
        await repeat_every(
            settings.projection.metrics_refresh_s, refresh_gauges_once, what="domain gauges refresh"
        )

    runtime.add_background(refresh_rollup)
    runtime.add_background(refresh_gauges)
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
