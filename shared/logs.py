"""JSON logs: one object per line, ISO 8601 UTC timestamps, the service, and the ids the line is about.

Every line carries ``ts`` (``2026-12-05T02:10:43.409123+00:00``), ``level``, ``logger``, ``message``
and ``service``; a line written while an HTTP request runs carries its ``request_id`` (see
:mod:`shared.httpmetrics`), and a line written while one event is applied its ``event_id`` and
``hazard_id``; while a span is current (tracing on, :mod:`shared.tracing`), its ``trace_id``
and ``span_id`` in hex. ANSI colour codes are stripped from messages, and uvicorn's ``color_message``
(the same message with colour codes) is dropped.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from datetime import UTC, datetime

from pythonjsonlogger.json import JsonFormatter

from shared import tracing
from shared.consumer import current_event_id, current_hazard_id

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
"""The id of the HTTP request being answered (set by :class:`shared.httpmetrics.HttpObservability`)."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_DROPPED = ("color_message",)


def strip_ansi(text: str) -> str:
    """The text without ANSI escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def iso_utc(created: float) -> str:
    """A log record's time as ISO 8601 in UTC with its zone, to the microsecond."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")


def _text(value: object | None) -> str | None:
    """An id bound by :func:`shared.consumer.bind_event_context` (a UUID as the event has it) as text."""
    return None if value is None else str(value)


class _Context(logging.Filter):
    """Adds the service and the current request, event and hazard ids; cleans what would carry colour."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id.get()
        if not getattr(record, "event_id", None):
            record.event_id = _text(current_event_id.get())
        if not getattr(record, "hazard_id", None):
            record.hazard_id = _text(current_hazard_id.get())
        ids = tracing.log_ids()
        record.trace_id, record.span_id = ids if ids is not None else (None, None)
        for name in _DROPPED:
            record.__dict__.pop(name, None)
        if isinstance(record.msg, str) and "\x1b" in record.msg:
            record.msg = strip_ansi(record.msg)
        if record.args:
            record.args = tuple(strip_ansi(a) if isinstance(a, str) else a for a in record.args)
        return True


class IsoJsonFormatter(JsonFormatter):
    """JSON lines whose ``ts`` is ISO 8601 UTC, and whose empty ids are left out."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_utc(record.created)

    def process_log_record(self, log_data: dict[str, object]) -> dict[str, object]:
        for key in ("request_id", "event_id", "hazard_id", "trace_id", "span_id"):
            if log_data.get(key) is None:
                log_data.pop(key, None)
        return log_data


class IsoTextFormatter(logging.Formatter):
    """Plain lines for a terminal, with the same ISO 8601 UTC time and the request id when there is one."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_utc(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [request {request_id}]" if request_id else line


def make_handler(service: str, *, json: bool = True) -> logging.Handler:
    """The stderr handler every service logs through."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(service))
    if json:
        handler.setFormatter(
            IsoJsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            IsoTextFormatter("%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s")
        )
    return handler


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    """Route every logger to stderr, as JSON unless told otherwise."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(service, json=json)]
    root.setLevel(level)
    # FastStream gives its own logger a coloured stderr handler and no propagation: route it to ours.
    for name in ["faststream", *(n for n in logging.root.manager.loggerDict if n.startswith("faststream."))]:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # httpx logs every request at INFO: the notifications sender records each delivery itself.
    # Our own access log (hazard.access) replaces uvicorn's, which is off (shared.runner).
    for noisy in ("aiokafka", "uvicorn.access", "httpx", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
