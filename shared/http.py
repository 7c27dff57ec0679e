"""HTTP helpers: the body size limit, enforced before a body is parsed, and the NUL guard on URLs."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_body


class _TooLarge(HTTPException):
    """Raised while streaming; an HTTPException so frameworks re-raise it instead of calling it a parse error."""


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length up front or while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._reject(send, 400, "bad_request", "Content-Length is not a number.")
                    return
                if length > self.max_bytes:
                    await self._too_large(send)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(
                        413, f"The request body is larger than the {self.max_bytes} bytes accepted."
                    )
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await self._reject(
            send,
            413,
            "payload_too_large",
            f"The request body is larger than the {self.max_bytes} bytes accepted.",
        )

    @staticmethod
    async def _reject(send: Send, status: int, code: str, message: str) -> None:
        await send_error(send, status, code, message)


class RefuseNulInUrl:
    """Refuse a path or query string holding a NUL character (``%00``) with 422.

    PostgreSQL text cannot hold NUL, so such a value reached the database as a failed statement
    and the client got a 500 (found by the long fuzzing run: a department id with ``%00`` in it).
    No identifier or filter of this API contains one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            if b"%00" in query or b"\x00" in query or "\x00" in scope.get("path", ""):
                await send_error(
                    send,
                    422,
                    "invalid",
                    "The URL holds a NUL character (%00), which no identifier or filter contains.",
                    [{"field": "(url)", "problem": "must not contain NUL characters"}],
                )
                return
        await self.app(scope, receive, send)


async def send_error(
    send: Send, status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> None:
    """Answer with the API's error shape straight from ASGI (before any framework has run)."""
    body = json.dumps(error_body(code, message, list(details or []))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
