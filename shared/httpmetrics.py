"""HTTP RED metrics, the request id and the access log: one ASGI middleware outside everything else.

Every HTTP request of a service passes through :class:`HttpObservability`, which sits outside
the whole middleware stack (outside the server-error handler and the body limits), so every answer is counted, a 413 or a 500 included.

* **Metrics**: ``hazard_http_requests_total`` and ``hazard_http_request_duration_seconds`` by
  service, method, route *template* (``/api/v1/hazards/{hazard_id}``, never the raw path) and
  status class (``2xx`` .. ``5xx``; a request the client abandoned before any answer is a 499,
  class ``4xx``, not a server error). Labels are bounded: a path no route knows is
  ``route="(unmatched)"``, a method outside the usual ones is ``method="OTHER"``. Errors are
  the ``5xx`` class.
* **Request id**: taken from ``X-Request-ID`` when the client sends a reasonable one (1..128
  printable ASCII characters), generated otherwise; returned in the ``X-Request-ID`` header of
  the answer and put on every log line written while the request runs (:data:`shared.logs.current_request_id`).
* **Access log**: one line per request on the ``hazard.access`` logger: method, path (without the
  query string, which may hold an Open311 ``api_key``), route, status, duration, request id.
  No header is logged, so a bearer token never reaches the log.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import tracing
from shared.logs import current_request_id

access_log = logging.getLogger("hazard.access")
log = logging.getLogger(__name__)

UNMATCHED = "(unmatched)"
# Probes and scrapes: counted and logged, never traced (a span every few seconds per replica).
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
CLIENT_CLOSED = 499
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_ID_HEADER = b"x-request-id"
_MAX_REQUEST_ID = 128
_SEEN_MAX = 1024

HTTP_REQUESTS = Counter(
    "hazard_http_requests_total",
    "HTTP requests answered, by method, route template and status class (errors: status_class 5xx).",
    ["service", "method", "route", "status_class"],
)
HTTP_DURATION = Histogram(
    "hazard_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by method, route template and status class.",
    ["service", "method", "route", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def status_class(status: int) -> str:
    """``2xx`` .. ``5xx``; anything outside 100..599 counts as ``5xx`` (the server misbehaved)."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


def method_label(method: str) -> str:
    return method if method in METHODS else "OTHER"


class RouteTemplates:
    """Finds the route template of a request, from the router's match or from the app's OpenAPI paths.

    The router leaves the matched route in ``scope["route"]``. A request answered before routing
    (a body limit) is matched against the documented paths (compiled once,
    on first use); a path none of them matches is ``(unmatched)``.
    """

    def __init__(self, openapi: Callable[[], dict[str, Any]]) -> None:
        self._openapi = openapi
        self.openapi = openapi
        self._compiled: list[tuple[re.Pattern[str], str, frozenset[str]]] | None = None
        self._seen: dict[tuple[str, str], str] = {}

    def _paths(self) -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
        if self._compiled is None:
            compiled = []
            try:
                paths: dict[str, Any] = self._openapi().get("paths", {})
            except Exception:  # a broken schema must not break answering; such requests go unmatched
                log.exception(
                    "the OpenAPI document could not be built; pre-routing answers count as unmatched"
                )
                paths = {}
            for template, operations in paths.items():
                regex, _, _ = compile_path(template)
                compiled.append((regex, template, frozenset(m.upper() for m in operations)))
            self._compiled = compiled
        return self._compiled

    def __call__(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str) and path:
            return path
        key = (scope.get("method", ""), scope.get("path", ""))
        found = self._seen.get(key)
        if found is None:
            found = self._match(*key)
            if len(self._seen) >= _SEEN_MAX:  # raw paths are unbounded: keep the hot ones only
                self._seen.clear()
            self._seen[key] = found
        return found

    def _match(self, method: str, request_path: str) -> str:
        partial = None
        for regex, template, methods in self._paths():
            if regex.match(request_path):
                if method in methods:
                    return template
                partial = partial or template
        return partial or UNMATCHED


def accepted_request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is 1..128 printable ASCII characters, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            if 0 < len(value) <= _MAX_REQUEST_ID and all(0x21 <= b <= 0x7E for b in value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


Observer = Callable[[str, Callable[[], dict[str, Any]], str, str, int], None]


class HttpObservability:
    """Count, time and log every HTTP request, and give it a request id; see the module's docstring."""

    observers: ClassVar[list[Observer]] = []
    """Called with (service, the app's OpenAPI document getter, method, route, status) after each
    answer; the tests record which statuses each route gives (``tests/support/statuses.py``)."""

    def __init__(self, app: ASGIApp, *, service: str, openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.service = service
        self.route_template = RouteTemplates(openapi)
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def _observe(self, method: str, route: str, cls: str, elapsed: float) -> None:
        key = (method, route, cls)
        series = self._series.get(key)
        if series is None:  # labels are bounded, so is this
            series = (
                HTTP_REQUESTS.labels(self.service, method, route, cls),
                HTTP_DURATION.labels(self.service, method, route, cls),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = accepted_request_id(scope)
        token = current_request_id.set(request_id)
        status: int | None = None
        failed = False
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        traced = tracing.enabled() and scope.get("path") not in UNTRACED
        span = self._start_span(scope, request_id) if traced else None
        span_token = otel_context.attach(trace.set_span_in_context(span)) if span is not None else None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            failed = True
            raise
        finally:
            elapsed = time.perf_counter() - started
            if status is None:
                # Nothing was answered: our failure (500), or the client left first (499, as nginx says).
                status = 500 if failed else CLIENT_CLOSED
            method = method_label(scope.get("method", ""))
            route = self.route_template(scope)
            cls = status_class(status)
            self._observe(method, route, cls, elapsed)
            for observer in self.observers:
                observer(self.service, self.route_template.openapi, method, route, status)
            access_log.info(
                "%s %s %d %.1f ms",
                method,
                scope.get("path", ""),
                status,
                elapsed * 1000,
                extra={
                    "http_method": method,
                    "path": scope.get("path", ""),
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
            current_request_id.reset(token)
            if span is not None and span_token is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                span.end()
                otel_context.detach(span_token)

    def _start_span(self, scope: Scope, request_id: str) -> Any:
        """The request's ``SERVER`` span, a child of the caller's ``traceparent`` when it sent one."""
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", ())
            if k in (b"traceparent", b"tracestate")
        }
        method = method_label(scope.get("method", ""))
        return tracing.tracer(self.service).start_span(
            f"{method} {scope.get('path', '')}",
            context=tracing.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={
                "hazard.service": self.service,
                "http.request.method": method,
                "url.path": scope.get("path", ""),
                "hazard.request_id": request_id,
            },
        )
