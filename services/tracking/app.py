"""Wiring of the tracking service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.tracking import api, handlers, service, tables
from services.tracking.settings import TrackingSettings
from services.tracking.timers import CaseGauge, TimerLoop
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


def create_app(settings: TrackingSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The tracking HTTP app; its lifespan runs the broker, the consumer, the relay and the timer loop."""
    reference = reference or load_reference_data(settings.reference_data_dir)
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.make_handler(reference=reference, relapse_distance_m=settings.relapse.distance_m),
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
    )
    work = service.Casework(
        reference=reference,
        inbox=tables.inbox,
        outbox=runtime.outbox,
        relapse_distance_m=settings.relapse.distance_m,
    )
    timer_loop = TimerLoop(
        sessions=runtime.sessions,
        work=work,
        batch_size=settings.timers.batch_size,
        poll_interval_s=settings.timers.poll_interval_s,
        idle_poll_max_s=settings.timers.idle_poll_max_s,
    )
    gauge = CaseGauge(sessions=runtime.sessions, interval_s=settings.timers.gauge_interval_s)
    runtime.add_background(timer_loop.run)
    runtime.add_background(gauge.run)
    app = create_http_app(
        runtime,
        title="hazard-dispatch tracking",
        description="Follows rectification, verification and closure, and detects relapse.",
    )
    app.state.timer_loop = timer_loop
    app.state.case_gauge = gauge
    app.include_router(api.router)
    return app
