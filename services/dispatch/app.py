"""Wiring of the dispatch service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch import api, handlers, tables
from services.dispatch.service import Commands
from services.dispatch.settings import DispatchSettings
from services.dispatch.timers import GaugeRefresher, TimerLoop, background_loops
from shared.events import (
    HazardAcknowledged,
    HazardDispatched,
    HazardEscalated,
    HazardReceiptOverdue,
    HazardReferredToOperators,
    HazardReturned,
)
from shared.reference import ReferenceData, load_reference_data
from shared.service import ServiceRuntime, create_http_app

NAME = "dispatch"


def create_app(settings: DispatchSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The dispatch HTTP app; its lifespan runs the broker, the consumer, the relay and the timer loop."""
    reference = reference or load_reference_data(settings.reference_data_dir)
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        handler=handlers.make_handler(reference),
        interested=handlers.INTERESTED,
        reference=reference,
        publishes=(
            HazardDispatched,
            HazardReferredToOperators,
            HazardAcknowledged,
            HazardReturned,
            HazardReceiptOverdue,
            HazardEscalated,
        ),
    )
    timer_loop = TimerLoop(
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        batch_size=settings.timers.batch_size,
        poll_interval_s=settings.timers.poll_interval_s,
        idle_poll_max_s=settings.timers.idle_poll_max_s,
    )
    gauges = GaugeRefresher(sessions=runtime.sessions, interval_s=settings.timers.gauge_interval_s)
    if settings.timers.enabled:
        for loop in background_loops(timer_loop, gauges, concurrency=settings.timers.concurrency):
            runtime.add_background(loop)
    app = create_http_app(
        runtime,
        title="hazard-dispatch dispatch",
        description="Routes each hazard to a department and holds it to its receipt deadline.",
    )
    app.state.dispatch_commands = Commands(
        sessions=runtime.sessions,
        outbox=runtime.outbox,
        reference=reference,
        returns=settings.returns.policy(),
        extension_limit=settings.extensions.limit(),
    )
    app.state.timer_loop = timer_loop
    app.include_router(api.router)
    return app
