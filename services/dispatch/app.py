"""Wiring of the dispatch service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

from fastapi import FastAPI

from services.dispatch import api, handlers, tables, timers
from services.dispatch.repository import DispatchRepository
from services.dispatch.service import Policies
from services.dispatch.settings import DispatchSettings
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
    """The dispatch HTTP app; its lifespan runs the broker, the consumer, the relay and the timer loops."""
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
        repository=DispatchRepository,
    )
    timers.declare_loops(runtime)
    app = create_http_app(
        runtime,
        title="hazard-dispatch dispatch",
        description="Routes each hazard to a department and holds it to its receipt deadline.",
    )
    app.state.dispatch_policies = Policies(
        reference=reference, returns=settings.returns.policy(), extension_limit=settings.extensions.limit()
    )
    app.include_router(api.router)
    return app
