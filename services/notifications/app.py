"""Wiring of the notifications service: ``create_app(settings)`` builds everything, connects nothing."""

from __future__ import annotations

import functools

from fastapi import FastAPI

from services.notifications import api, domain, handlers, repository, service, tables
from services.notifications.repository import NotificationsRepository
from services.notifications.sender import SenderLoop
from services.notifications.settings import NotificationsSettings
from services.notifications.timers import DeliveryGauge, ReminderLoop
from shared.db import listening_connection
from shared.events import HazardNotified
from shared.idle import wake_on_notify
from shared.reference import ReferenceData, UnknownReference, load_reference_data
from shared.service import ServiceRuntime, create_http_app

NAME = "notifications"


def create_app(settings: NotificationsSettings, *, reference: ReferenceData | None = None) -> FastAPI:
    """The notifications HTTP app; its lifespan runs the consumer, the reminder loop and the sender."""
    reference = reference or load_reference_data(settings.reference_data_dir)
    notifier = service.Notifier(
        fractions=settings.reminders.fractions,
        escalation_targets=tuple(
            dict.fromkeys(step.target for step in reference.escalation_steps if step.target != "department")
        ),
    )
    runtime = ServiceRuntime.build(
        name=NAME,
        settings=settings,
        outbox_table=tables.outbox,
        inbox_table=tables.inbox,
        # A sender-only process (#16) reads no topic: no consumer, no reminder loop.
        handler=handlers.make_handler(notifier=notifier) if settings.consume else None,
        interested=handlers.INTERESTED,
        reference=reference,
        publishes=(HazardNotified,),
        # Deliveries are announced by NOTIFY only to senders in other processes (SEND=false here).
        repository=functools.partial(NotificationsRepository, announce=not settings.send),
    )

    def department_name(department_id: str, language: domain.Language) -> str:
        try:
            department = reference.department(department_id)
        except UnknownReference:
            return department_id
        return department.name_zh if language == "zh" else department.name_en

    sender = SenderLoop(
        sessions=runtime.sessions,
        settings=settings.delivery,
        smtp=settings.smtp,
        secrets=service.Secrets(settings.secret_key.get_secret_value()),
        department_name=department_name,
        outbox=runtime.outbox,
    )
    reminders = ReminderLoop(work=runtime.work, batch_size=settings.reminders.batch_size)
    gauge = DeliveryGauge(work=runtime.work)
    if settings.send:
        runtime.add_background(sender.run)  # not periodic: it claims again as soon as sends finish
    if settings.send and not settings.consume:
        # A sender of its own hears the consumers' commits by NOTIFY (in one process, the commit
        # itself wakes the sender): an idle sender does not wait for its poll.

        async def listen_for_deliveries() -> None:
            await wake_on_notify(
                lambda: listening_connection(runtime.engine, "hazard-notifications-sender"),
                repository.DELIVERIES_CHANNEL,
                repository.DELIVERIES_WAKE,
            )

        runtime.add_background(listen_for_deliveries)
    if settings.consume:
        runtime.until_due(
            reminders.sweep,
            reminders.seconds_to_next,
            wake_key=repository.REMINDERS_WAKE,
            busy_s=settings.reminders.poll_interval_s,
            idle_max_s=settings.reminders.idle_poll_max_s,
            what="reminder sweep",
        )
        runtime.every(gauge.interval_s, gauge.refresh, what="delivery gauge refresh")
    app = create_http_app(
        runtime,
        title="hazard-dispatch notifications",
        description="Tells the people who must act: dispatches, reminders, overdue notices and escalations.",
    )
    app.state.sender = sender
    app.state.reminder_loop = reminders
    app.include_router(api.router)
    return app
