"""Wiring of the reporting service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.admin import api as admin_api
from services.reporting import api, handlers, people, service, tables
from services.reporting.repository import ROLLUP_WAKE, ReportingRepository
from services.reporting.settings import ProjectionSettings, ReportingSettings, refresh_pause_s
from shared.idle import repeat_until_due
from shared.reference import ReferenceData, load_reference_data
from shared.service import ServiceRuntime, create_http_app

NAME = "reporting"
log = logging.getLogger(__name__)


async def repeat_rollup_refresh(
    refresh: Callable[[], Awaitable[int]], projection: ProjectionSettings
) -> None:
    """The background rollup refresher: ``refresh`` while it finds changes, paced by its cost
    (:func:`refresh_pause_s`); once it finds none, wait for a commit of this process that recorded
    some (then ``rollup_refresh_s`` more, to gather the batch's neighbours), at most ``rollup_idle_s``
    (or ``rollup_refresh_s`` if longer). The shared timer loop (:func:`shared.idle.repeat_until_due`)
    with no due times: changes are announced by commits."""

    async def no_due_time() -> None:
        return None

    await repeat_until_due(
        refresh,
        no_due_time,
        wake_key=ROLLUP_WAKE,
        busy_s=lambda took: refresh_pause_s(projection, took),
        idle_max_s=max(projection.rollup_idle_s, projection.rollup_refresh_s),
        what="rollup refresh",
    )


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

    async def refresh_rollup() -> int:
        async with runtime.work() as uow:
            return await service.refresh_rollup(uow)

    async def refresh_gauges() -> None:
        # The gauges read the rollup, so bring it up to date first.
        await refresh_rollup()
        async with runtime.work() as uow:
            await service.refresh_gauges(
                uow, reference=reference, window_days=settings.projection.metrics_window_days
            )

    async def rollup_loop() -> None:
        await repeat_rollup_refresh(refresh_rollup, settings.projection)

    # The changes recorded with new events folded into the rollup, every rollup_refresh_s while
    # they arrive (paced by its cost), woken by this process's commits when idle (a deadlock or a
    # database away: the next round retries); the Prometheus domain gauges.
    runtime.add_background(rollup_loop)
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
