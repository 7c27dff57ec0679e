"""Whose fault a failure is (the environment's or the message's), and dead letters that always fit."""

from __future__ import annotations

import hashlib
import json

import asyncpg.exceptions as pg_errors
import pytest
import sqlalchemy as sa

from shared.consumer import blocked_pause_s, environment_fault, is_transient
from shared.deadletter import bound_dead_letter, dead_letter_size
from shared.outbox import OutgoingMessage


def _wrapped(exc: Exception) -> sa.exc.DBAPIError:
    """As SQLAlchemy raises it: a DBAPIError whose ``orig`` carries the SQLSTATE."""
    try:
        raise exc
    except Exception as inner:
        wrapped = sa.exc.DBAPIError("select 1", None, inner)
        wrapped.__cause__ = inner
        return wrapped


ENVIRONMENT = [
    (pg_errors.UndefinedTableError('relation "dispatch.hazards" does not exist'), "schema"),
    (pg_errors.UndefinedColumnError('column "grid_id" does not exist'), "schema"),
    (pg_errors.InsufficientPrivilegeError("permission denied for table hazards"), "permission"),
    (pg_errors.InvalidPasswordError('password authentication failed for user "dispatch"'), "permission"),
    (pg_errors.InvalidAuthorizationSpecificationError('role "dispatch" does not exist'), "permission"),
    (pg_errors.InvalidCatalogNameError('database "hazard" does not exist'), "database_missing"),
    (pg_errors.InvalidSchemaNameError('schema "dispatch" does not exist'), "schema"),
    (pg_errors.FeatureNotSupportedError("cached plan must not change result type"), "schema"),
    (RuntimeError("could not open file: permission denied"), "permission"),
    (pg_errors.ConnectionDoesNotExistError("connection was closed"), "unavailable"),
    (pg_errors.SerializationError("could not serialize access"), "contention"),
]


@pytest.mark.parametrize(
    ("exc", "kind"), ENVIRONMENT, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v
)
def test_environment_errors_are_not_the_messages_fault(exc: Exception, kind: str) -> None:
    for error in (exc, _wrapped(exc)):
        assert is_transient(error), f"{error!r} would be dead-lettered"
        fault = environment_fault(error)
        assert fault is not None
        assert fault.kind == kind
        assert str(exc) in fault.detail


@pytest.mark.parametrize(
    "exc",
    [
        pg_errors.UniqueViolationError("duplicate key value violates unique constraint"),
        pg_errors.InvalidTextRepresentationError("invalid input syntax for type uuid"),
        pg_errors.CheckViolationError("new row violates check constraint"),
        ValueError("cannot apply this event"),
        KeyError("grid"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_message_errors_stay_the_messages_fault(exc: Exception) -> None:
    assert not is_transient(exc)
    assert not is_transient(_wrapped(exc))
    assert environment_fault(exc) is None


def _message(value: bytes, **headers: str) -> OutgoingMessage:
    return OutgoingMessage(
        "t.dlt",
        "7b7d3f4e-5c2a-4e7b-9c1d-0a1b2c3d4e5f",
        value,
        {"event_id": "e1", "dlt_reason": "failed", "dlt_consumer": "dispatch", **headers},
    )


def test_a_dead_letter_that_fits_is_left_as_it_is() -> None:
    message = _message(b'{"event_type": "hazard.reported"}')
    assert bound_dead_letter(message, max_bytes=10_000) is message


def test_a_dead_letter_over_the_limit_keeps_headers_saying_where_the_original_is() -> None:
    value = json.dumps({"description": "x" * 200_000}).encode()
    message = _message(
        value,
        dlt_origin_topic="hazard.lifecycle",
        dlt_origin_partition="4",
        dlt_origin_offset="1234",
        huge="h" * 50_000,
    )
    bounded = bound_dead_letter(message, max_bytes=20_000)
    assert dead_letter_size(bounded) <= 20_000
    assert bounded.topic == message.topic
    assert bounded.key == message.key
    assert bounded.value == value[: len(bounded.value)], "what is kept is the original's beginning"
    assert bounded.headers["dlt_value_truncated"] == "true"
    assert bounded.headers["dlt_original_size"] == str(len(value))
    assert bounded.headers["dlt_original_sha256"] == hashlib.sha256(value).hexdigest()
    for name in ("event_id", "dlt_reason", "dlt_consumer", "dlt_origin_topic", "dlt_origin_offset"):
        assert bounded.headers[name] == message.headers[name]
    assert "huge" not in bounded.headers
    assert bounded.headers["dlt_headers_dropped"] == "huge"


def test_a_limit_too_small_for_any_value_drops_the_value_and_still_fits() -> None:
    message = _message(b"v" * 5_000, dlt_error="e" * 1000)
    bounded = bound_dead_letter(message, max_bytes=1_200)
    assert dead_letter_size(bounded) <= 1_200
    assert bounded.value == b""
    assert bounded.headers["dlt_original_size"] == "5000"


def test_dead_letter_headers_are_text_the_outbox_can_store() -> None:
    message = _message(b"{}", dlt_error="bad \x00 byte and a lone \ud800 surrogate")
    cleaned = bound_dead_letter(message, max_bytes=10_000)
    assert cleaned.headers["dlt_error"] == "bad \\u0000 byte and a lone ? surrogate"
    assert cleaned.value == message.value


def test_a_blocked_consumer_waits_longer_each_time_up_to_the_cap() -> None:
    assert [blocked_pause_s(n, 1.0, 10.0) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert blocked_pause_s(10_000, 0.1, 30.0) == 30.0
