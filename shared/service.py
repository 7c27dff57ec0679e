"""What every service process is made of: database, broker, outbox relay, consumer, and the HTTP app.

A service builds a :class:`ServiceRuntime` from its settings in ``create_app``;
the HTTP app's lifespan starts the broker and relay after the routes exist and
stops them in the safe order: stop taking messages, let in-flight batches
finish (the broker's graceful timeout), stop the relay, and only then close the
database pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from shared import metrics, tracing
from shared.admin_sync import AdminSync
from shared.auth import TokenRegistry
from shared.consumer import EventConsumer, Handler
from shared.db import create_engine, create_session_factory
from shared.errors import install_error_handlers
from shared.http import BodySizeLimit, RefuseNulInUrl, send_error
from shared.httpmetrics import HttpObservability
from shared.idle import ClockWatch, repeat_until_due
from shared.kafka import (
    BrokerSender,
    create_broker,
    declare_publisher,
    fetch_pacer,
    subscribe_lifecycle,
    subscriber_assigned,
)
from shared.openapi import OPERATIONS_PATHS, install_openapi
from shared.outbox import Outbox, OutboxRelay
from shared.reference import ReferenceData, coverage_warning, load_reference_data
from shared.settings import ServiceSettings
from shared.uow import UnitOfWorkFactory, no_repository

log = logging.getLogger(__name__)

ADVISORY_CHECKS = frozenset({"calendar"})
"""Readiness checks shown in /readyz that warn without making the service unready."""


S = TypeVar("S", bound=ServiceSettings)


@dataclass
class ServiceRuntime(Generic[S]):
    """The live parts of one service process, generic over the service's settings class.

    ``work`` opens units of work (:mod:`shared.uow`) on the service's repository: routes and
    timers call ``async with runtime.work() as uow:``; the consumer hands its handler a
    :class:`shared.consumer.BatchContext` on the same repository.
    """

    name: str
    settings: S
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broker: KafkaBroker
    outbox: Outbox
    relay: OutboxRelay
    reference: ReferenceData
    tokens: TokenRegistry
    work: UnitOfWorkFactory[Any]
    consumer: EventConsumer | None = None
    admin_sync: AdminSync | None = None
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    started: bool = False
    broker_connected: bool = False
    # Intake keeps accepting reports while the broker is away, so it stays ready without it.
    ready_without_broker: bool = False
    # Set by SIGUSR1 (the local runner draining before it stops): requests are refused with 503
    # while the consumer and relay go on, so the stack can empty before anything stops.
    draining: bool = False

    @classmethod
    def build(
        cls,
        *,
        name: str,
        settings: S,
        outbox_table: sa.Table,
        inbox_table: sa.Table | None = None,
        handler: Handler | None = None,
        interested: frozenset[str] | None = None,
        reference: ReferenceData | None = None,
        publishes: tuple[type[Any], ...] = (),
        repository: Callable[[AsyncSession], Any] = no_repository,
    ) -> ServiceRuntime[S]:
        """Wire the parts from settings; nothing connects until :meth:`start`."""
        reference = reference or load_reference_data(settings.reference_data_dir)
        engine = create_engine(settings.database, application_name=f"hazard-{name}")
        sessions = create_session_factory(engine)
        broker = create_broker(settings.kafka, service=name)
        sender = BrokerSender(broker, service=name)
        outbox = Outbox(outbox_table, default_topic=settings.kafka.lifecycle_topic)
        relay = OutboxRelay(
            table=outbox_table,
            sessions=sessions,
            sender=sender,
            service=name,
            batch_size=settings.outbox.batch_size,
            poll_interval_s=settings.outbox.poll_interval_s,
            idle_poll_max_s=settings.outbox.idle_poll_max_s,
            error_backoff_s=settings.outbox.error_backoff_s,
            retention=timedelta(days=settings.outbox.retention_days),
            prune_batch_size=settings.outbox.prune_batch_size,
            prune_interval_s=settings.outbox.prune_interval_s,
        )
        runtime = cls(
            name=name,
            settings=settings,
            engine=engine,
            sessions=sessions,
            broker=broker,
            outbox=outbox,
            relay=relay,
            reference=reference,
            tokens=TokenRegistry.from_settings(settings.auth),
            work=UnitOfWorkFactory(sessions, outbox, repository),
        )
        if settings.admin_sync.enabled:
            # Tokens, departments, routing rules and campaigns administered at runtime (shared.admin_sync).
            runtime.admin_sync = AdminSync(
                engine,
                runtime.tokens,
                reference,
                poll_interval_s=settings.admin_sync.poll_interval_s,
                listen_poll_s=settings.admin_sync.listen_poll_s or None,
            )
            runtime.add_background(runtime.admin_sync.run)
        for event in publishes:
            declare_publisher(
                broker,
                settings.kafka.lifecycle_topic,
                event=event,
                description=f"{name} publishes {event.TYPE} through its transactional outbox",
            )
        if handler is not None:
            if inbox_table is None:
                raise ValueError("a consuming service needs an inbox table")
            runtime.consumer = EventConsumer(
                service=name,
                sessions=sessions,
                inbox=inbox_table,
                outbox=outbox,
                handler=handler,
                sender=sender,
                dead_letter_topic=settings.kafka.dead_letter_topic,
                interested=interested,
                retry_attempts=settings.kafka.retry_attempts,
                retry_backoff_s=settings.kafka.retry_backoff_s,
                dead_letter_max_bytes=settings.kafka.dead_letter_max_bytes,
                repository=repository,
            )
            pacer = fetch_pacer(settings.kafka)
            subscribe_lifecycle(
                broker,
                runtime.consumer,
                settings.kafka,
                group_id=settings.kafka.group_id or f"hazard-{name}",
                description=f"{name} applies lifecycle events idempotently, in batches",
                pacer=pacer,
            )
            if pacer.idle_ms > pacer.busy_ms:

                async def pace_fetches() -> None:
                    pacer.tick()

                runtime.every(1.0, pace_fetches, what="fetch pacing")
        return runtime

    def add_background(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a coroutine for the life of the process (timers, projections); restarted if it fails."""
        self.background.append(loop)

    def every(
        self,
        interval_s: float | Callable[[float], float],
        step: Callable[[], Awaitable[object]],
        *,
        what: str,
    ) -> None:
        """Declare a periodic loop (timer sweeps, gauge refreshes, rollups): ``step`` every ``interval_s``.

        The one way every service declares its loops; a failing round is logged and the next retries.
        """

        async def loop() -> None:
            await repeat_every(interval_s, step, what=what)

        loop.__name__ = what.replace(" ", "_")
        self.add_background(loop)

    def until_due(
        self,
        step: Callable[[], Awaitable[int]],
        next_due_s: Callable[[], Awaitable[float | None]],
        *,
        wake_key: str,
        busy_s: float,
        idle_max_s: float,
        what: str,
        full_batch: int | None = None,
        passes: int = 1,
    ) -> None:
        """Declare a timer loop (``passes`` of them): ``step`` while rows are due, else sleep until the next is.

        The one way every service declares its timer loops (:func:`shared.idle.repeat_until_due`):
        idle, a loop costs one look at the next due time per ``idle_max_s`` at most; this process's
        commits that add or move rows wake it at once.
        """
        watch = ClockWatch() if passes > 1 else None

        async def loop() -> None:
            await repeat_until_due(
                step,
                next_due_s,
                wake_key=wake_key,
                busy_s=busy_s,
                idle_max_s=idle_max_s,
                what=what,
                full_batch=full_batch,
                watch=watch,
            )

        loop.__name__ = what.replace(" ", "_")
        for _ in range(passes):
            self.add_background(loop)

    async def start(self) -> None:
        """Connect the broker (or keep trying in the background), start the relay and background loops.

        A broker that is away at start-up does not stop the service: the HTTP app serves,
        accepted work waits in the outbox, and consuming begins once the broker answers.
        """
        tracing.configure_tracing(
            self.name,
            otlp_endpoint=self.settings.tracing.otlp_endpoint,
            sample_ratio=self.settings.tracing.sample_ratio,
        )
        # Loads the holiday package's tables now, not inside the first batch that needs them.
        calendar = self.calendar_check()
        if calendar != "ok":
            log.warning("working calendar: %s", calendar)
        if self.admin_sync is not None:
            # Administered tokens and reference data before the first request, when the database answers.
            try:
                async with asyncio.timeout(2):
                    await self.admin_sync.poll_once()
            except Exception as exc:
                log.warning("admin data not loaded at start-up (%s); the poll retries", exc)
        try:
            await self.broker.start()
            self.broker_connected = True
        except Exception as exc:
            log.warning("broker unavailable at start-up (%s); retrying in the background", exc)
            self._tasks.append(
                asyncio.create_task(self._connect_broker(), name=f"{self.name}-broker-connect")
            )
        if self.settings.outbox.enabled:
            self._tasks.append(asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox-relay"))
        for loop in self.background:
            self._tasks.append(asyncio.create_task(_supervised(loop), name=f"{self.name}-{loop.__name__}"))
        self.started = True
        log.info("%s started", self.name)

    def stop_accepting(self) -> None:
        """Refuse new requests (503) from now on; consuming and relaying go on."""
        if not self.draining:
            self.draining = True
            log.info("%s draining: new requests are refused, consumer and relay go on", self.name)

    async def _connect_broker(self) -> None:
        while not self.broker_connected:
            await asyncio.sleep(self.settings.kafka.reconnect_backoff_s)
            try:
                await self.broker.start()
                self.broker_connected = True
                log.info("%s connected to the broker", self.name)
            except Exception as exc:
                log.warning("broker still unavailable: %s", exc)

    async def stop(self) -> None:
        """Stop consuming (in-flight batches finish), stop loops and relay, then close the pool."""
        self.started = False
        try:
            await self.broker.stop()
        except Exception as exc:
            log.warning("broker did not stop cleanly: %s", exc)
        self.relay.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.engine.dispose()
        log.info("%s stopped", self.name)

    async def readiness(self) -> dict[str, Any]:
        """Whether the database and broker answer and the consumers are running."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as conn:
                    await conn.execute(sa.text("select 1"))
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            ok = await self.broker.ping(timeout=2)
            checks["broker"] = "ok" if ok else "unavailable"
        except Exception as exc:
            checks["broker"] = f"unavailable: {type(exc).__name__}"
        consuming = self.started and self.broker_connected and subscriber_assigned(self.broker)
        checks["consumers"] = "ok" if consuming else "not running"
        blocked = self.consumer.blocked if self.consumer is not None else None
        if blocked is not None and (blocked.kind != "contention" or blocked.attempts >= 5):
            # The environment keeps events from being applied (a lock conflict only when it lasts).
            checks["consumers"] = (
                f"blocked ({blocked.kind}) since {blocked.since.isoformat(timespec='seconds')}, "
                f"{blocked.attempts} attempts: {blocked.detail}"
            )
        checks["calendar"] = self.calendar_check()
        return checks

    def calendar_check(self, today: date | None = None) -> str:
        """Return "ok", or a warning when the calendar's official schedule ends within 60 days of today.

        Sets the coverage metric. Advisory: the service stays ready, since today's deadlines are right
        and an unready fleet would stop taking reports; the alert and this text tell the operator.
        """
        calendar = self.reference.calendar
        today = today or datetime.now(UTC).astimezone(calendar.zone).date()
        metrics.CALENDAR_COVERAGE_DAYS.labels(self.name).set(calendar.coverage_days(today))
        warning = coverage_warning(calendar, today)
        return "ok" if warning is None else f"warning: {warning}"

    def is_ready(self, checks: dict[str, Any]) -> bool:
        """Ready when every check passes (intake: the broker may be away; its outbox holds the reports).

        Advisory checks (the calendar's coverage) are reported but never make the service unready.
        """
        optional = {"broker", "consumers"} if self.ready_without_broker else set()
        return all(v == "ok" for k, v in checks.items() if k not in optional | ADVISORY_CHECKS)

    def asyncapi(self) -> dict[str, Any]:
        """The AsyncAPI document of what this service consumes and publishes."""
        spec = AsyncAPI(self.broker, title=f"hazard-dispatch {self.name}", version="1.0.0")
        result: dict[str, Any] = spec.to_specification().to_jsonable()
        return result


class RefuseWhileDraining:
    """Answer 503 ``draining`` to every request but the operational ones once the runtime drains."""

    def __init__(self, app: ASGIApp, *, runtime: ServiceRuntime[Any]) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.runtime.draining and scope.get("path") not in OPERATIONS_PATHS:
            await send_error(send, 503, "draining", "The service is stopping; retry against another replica.")
            return
        await self.app(scope, receive, send)


async def repeat_every(
    interval_s: float | Callable[[float], float],
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Run ``step`` every ``interval_s`` until cancelled; a failure is logged and the next round retries.

    ``interval_s`` may be a function of how long the step took (seconds), for steps paced by their cost.
    ``clock`` and ``sleep`` are injected by tests.
    """
    while True:
        started = clock()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed, the next round retries: %s", what, exc)
        took = clock() - started
        await sleep(interval_s(took) if callable(interval_s) else interval_s)


async def _supervised(loop: Callable[[], Awaitable[None]]) -> None:
    while True:
        try:
            await loop()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop %s failed; restarting in 1 s", getattr(loop, "__name__", loop))
            await asyncio.sleep(1)


class ServiceApp(FastAPI):
    """A FastAPI app whose whole middleware stack, however built, sits inside :class:`HttpObservability`.

    Services add their own middleware after this app is made (intake's per-route body limits);
    wrapping the built stack keeps the metrics, request id and access log outside all of them.
    """

    service_name = "service"
    # Browser origins allowed by CORS (the people's pages): wrapped around the whole stack, so that
    # every answer carries the headers, intake's lean hot routes and refusals (413, 503 while draining) too.
    cors_origins: tuple[str, ...] = ()

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        if self.cors_origins:
            stack = CORSMiddleware(
                stack,
                allow_origins=list(self.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID"],
                max_age=600,
            )
        return HttpObservability(stack, service=self.service_name, openapi=self.openapi)


_READINESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "checks": {
            "type": "object",
            "description": "database, broker, consumers and calendar: ok, or what is wrong",
            "additionalProperties": {"type": "string"},
        },
    },
}


def create_http_app(runtime: ServiceRuntime[Any], *, title: str, description: str) -> FastAPI:
    """The HTTP app with health, readiness, metrics, AsyncAPI and the error shape; routes are added after."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = ServiceApp(title=title, description=description, version="1.0.0", lifespan=lifespan)
    app.service_name = runtime.name
    app.state.runtime = runtime
    app.state.tokens = runtime.tokens
    app.state.reference = runtime.reference
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(BodySizeLimit, max_bytes=runtime.settings.http.max_body_bytes)
    app.add_middleware(RefuseNulInUrl)
    app.add_middleware(RefuseWhileDraining, runtime=runtime)
    app.cors_origins = tuple(runtime.settings.http.cors_origins)

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Database and broker reachable, consumers running",
        responses={
            200: {"description": "Ready", "content": {"application/json": {"schema": _READINESS_SCHEMA}}},
            503: {
                "description": "Not ready: the checks say which part is not",
                "content": {"application/json": {"schema": _READINESS_SCHEMA}},
            },
        },
    )
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = runtime.is_ready(checks)
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        with contextlib.suppress(Exception):
            async with runtime.sessions() as session:
                metrics.OUTBOX_PENDING.labels(runtime.name).set(await runtime.outbox.pending(session))
        runtime.calendar_check()
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/asyncapi.json",
        tags=["operations"],
        summary="AsyncAPI document of consumed and published events",
        responses={
            200: {
                "description": "An AsyncAPI 3 document",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "description": "AsyncAPI 3.0 (https://www.asyncapi.com/docs/reference/specification/v3.0.0)",
                            "required": ["asyncapi", "channels"],
                            "properties": {"asyncapi": {"type": "string"}, "channels": {"type": "object"}},
                        }
                    }
                },
            }
        },
    )
    async def asyncapi(request: Request) -> JSONResponse:
        return JSONResponse(runtime.asyncapi())

    return app
