"""Dead letters that always fit on the dead-letter topic, and the headers replay reads.

A dead letter is the original record plus headers saying why and where it came from. A record
just under the broker's size limit is over it once those headers are added, and a message that
can never be sent would hold its partition (or the outbox relay) forever. :func:`bound_dead_letter`
keeps a dead letter under a limit: what does not fit is dropped, and headers say what it was, so
the original can be fetched from its topic, partition and offset (the lifecycle topic is kept
forever; ``python -m shared.replay_dead_letters`` does that by itself).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from shared.outbox import OutgoingMessage

REPLAY_FOR = "replay_for"
"""Header of a replayed event: the one consumer (service) that applies it; every other skips it."""

VALUE_TRUNCATED = "dlt_value_truncated"
ORIGINAL_SIZE = "dlt_original_size"
ORIGINAL_SHA256 = "dlt_original_sha256"
HEADERS_DROPPED = "dlt_headers_dropped"

# Headers a bounded dead letter keeps (each cut to _HEADER_MAX characters); the rest are dropped.
_KEPT = (
    "event_id",
    "event_type",
    "hazard_id",
    "producer",
    "schema_version",
    "dlt_reason",
    "dlt_consumer",
    "dlt_failed_at",
    "dlt_origin_topic",
    "dlt_origin_partition",
    "dlt_origin_offset",
    "dlt_error",
)
_HEADER_MAX = 1000
_KEY_MAX = 1000
_ERROR_MIN = 100
# A record batch of one record: the batch header (61 bytes) and the record's own fields and varints.
_RECORD_OVERHEAD = 96
_PER_HEADER_OVERHEAD = 10


def dead_letter_size(message: OutgoingMessage) -> int:
    """What the record will weigh on the wire, counted generously (batch and record overhead included)."""
    key = len(message.key.encode()) if message.key is not None else 0
    headers = sum(
        len(name.encode()) + len(value.encode()) + _PER_HEADER_OVERHEAD
        for name, value in message.headers.items()
    )
    return _RECORD_OVERHEAD + key + len(message.value) + headers


def _storable(text: str) -> str:
    """Text PostgreSQL's jsonb (the outbox's headers) can hold: no NUL, no unpaired surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="replace").decode()
    return text


def bound_dead_letter(message: OutgoingMessage, *, max_bytes: int) -> OutgoingMessage:
    """The dead letter itself when it fits in ``max_bytes``, else a bounded form of it that does.

    The bounded form keeps the routing and dead-letter headers (cut to 1,000 characters each),
    as much of the value's beginning as fits, and says what was cut: ``dlt_value_truncated``,
    ``dlt_original_size`` and ``dlt_original_sha256`` of the value, ``dlt_headers_dropped``.
    Header text that the outbox could not store (NUL, unpaired surrogates) is replaced either way.
    """
    clean = {name: _storable(value) for name, value in message.headers.items()}
    if clean != message.headers:
        message = replace(message, headers=clean)
    if dead_letter_size(message) <= max_bytes:
        return message
    value = message.value
    headers = {name: message.headers[name][:_HEADER_MAX] for name in _KEPT if name in message.headers}
    dropped = [name for name in message.headers if name not in headers]
    headers.update(
        {
            VALUE_TRUNCATED: "true",
            ORIGINAL_SIZE: str(len(value)),
            ORIGINAL_SHA256: hashlib.sha256(value).hexdigest(),
        }
    )
    if dropped:
        headers[HEADERS_DROPPED] = ",".join(dropped)[:_HEADER_MAX]
    key = message.key
    if key is not None and len(key.encode()) > _KEY_MAX:
        key = key.encode()[:_KEY_MAX].decode(errors="ignore")
    bounded = replace(message, key=key, value=b"", headers=headers)
    room = max_bytes - dead_letter_size(bounded)
    if room < 0 and "dlt_error" in headers:
        error = headers["dlt_error"]
        headers["dlt_error"] = error[: max(_ERROR_MIN, len(error) + room)]
        room = max_bytes - dead_letter_size(bounded)
    if room < 0:
        raise ValueError(f"a dead letter cannot be bounded to {max_bytes} bytes; raise the limit")
    return replace(bounded, value=value[:room])
