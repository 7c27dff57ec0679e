"""JSON logs: one object per line, with the service, and the event and hazard ids when a line is about one."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from shared.consumer import current_event_id, current_hazard_id


class _EventContext(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        if not getattr(record, "event_id", None):
            record.event_id = current_event_id.get()
        if not getattr(record, "hazard_id", None):
            record.hazard_id = current_hazard_id.get()
        return True


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    """Route every logger to stderr, as JSON unless told otherwise."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_EventContext(service))
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s",
                rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(service)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # FastStream gives its own logger a coloured stderr handler and no propagation: route it to ours.
    for name in ["faststream", *(n for n in logging.root.manager.loggerDict if n.startswith("faststream."))]:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # httpx logs every request at INFO: the notifications sender records each delivery itself.
    for noisy in ("aiokafka", "uvicorn.access", "httpx", "mail.log"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
