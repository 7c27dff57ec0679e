"""Wiring of the tracking service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from fastapi import FastAPI

from services.tracking import api, handlers, tables, timers
from services.tracking.repository import TIMERS_WAKE, TrackingRepository
from services.tracking.service import TrackingConfig
from services.tracking.settings import TrackingSettings
from shared.events import (
    HazardClosed,
    HazardRectificationOrdered,
    HazardRectificationOverdue,
    HazardRectified,
    HazardRelapsed,
    HazardVerified,
)
from shared.reference import ReferenceData, load_reference_data
from shared.service import ServiceRuntime, create_http_app

NAME = "tracking"


def tracking_config(settings: TrackingSettings, reference: ReferenceData) -> TrackingConfig:
    """The one configuration the use cases read (built once per app)."""
    return TrackingConfig(
        reference=reference,
        relapse_distance_m=settings.relapse.distance_m,
        extension_limit=timedelta(days=settings.extensions.max_days_beyond),
    )


def create_app(settings: TrackingSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The tracking HTTP app; its lifespan runs the broker, the consumer, the relay and the timer loops."""
    reference = reference or load_reference_data(settings.reference_data_dir)
    config = tracking_config(settings, reference)
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.make_handler(config),
        interested=handlers.INTERESTED,
        reference=reference,
        publishes=(
            HazardRectificationOrdered,
            HazardRectified,
            HazardRectificationOverdue,
            HazardVerified,
            HazardClosed,
            HazardRelapsed,
        ),
        repository=TrackingRepository,
    )
    runtime.until_due(
        partial(timers.sweep_due_timers, runtime.work, batch_size=settings.timers.batch_size, config=config),
        partial(timers.seconds_to_next, runtime.work),
        wake_key=TIMERS_WAKE,
        busy_s=settings.timers.poll_interval_s,
        idle_max_s=settings.timers.idle_poll_max_s,
        what="rectification timer sweep",
    )
    runtime.every(
        settings.timers.gauge_interval_s,
        partial(timers.refresh_case_gauge, runtime.work),
        what="case gauge refresh",
    )
    app = create_http_app(
        runtime,
        title="hazard-dispatch tracking",
        description="Follows rectification, verification and closure, and detects relapse.",
    )
    app.state.config = config
    app.include_router(api.router)
    return app
