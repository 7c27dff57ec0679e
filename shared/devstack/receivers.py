"""Local receivers of notifications: a real SMTP server and a webhook endpoint, both on loopback.

Used by the tests (each keeps what it received in memory) and meant for the local stack (each can
also write what it received: one ``.eml`` file per mail, one JSON line per webhook call).

The webhook receiver answers 200 on any path, except ``/status/<code>/...`` (answers that code)
and ``/slow/<seconds>/...`` (waits that long, then 200): enough to play a failing or hung receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import signal
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.devstack.ports import LOOPBACK, free_port


@dataclass(frozen=True)
class ReceivedMail:
    """One mail as the SMTP server took it."""

    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage


class _MailHandler:
    def __init__(self, receiver: MailReceiver) -> None:
        self.receiver = receiver

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        raw: bytes = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.receiver.received.append(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        if self.receiver.folder is not None:
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{len(self.receiver.received):05d}.eml"
            (self.receiver.folder / name).write_bytes(raw)
        return "250 Message accepted for delivery"


@dataclass
class MailReceiver:
    """A real SMTP server (aiosmtpd) on loopback, in its own thread."""

    port: int = field(default_factory=free_port)
    folder: Path | None = None
    received: list[ReceivedMail] = field(default_factory=list)
    _controller: Any = None

    def start(self) -> None:
        """Listen on 127.0.0.1:port."""
        from aiosmtpd.controller import Controller  # a development dependency

        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(_MailHandler(self), hostname=LOOPBACK, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass(frozen=True)
class ReceivedCall:
    """One webhook call."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """An HTTP server on loopback that records every call."""

    port: int = field(default_factory=free_port)
    log_path: Path | None = None
    calls: list[ReceivedCall] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def url(self, path: str = "/hook") -> str:
        """The URL of a path on this receiver."""
        return f"http://{LOOPBACK}:{self.port}{path}"

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        parts = request.url.path.strip("/").split("/")
        status = 200
        if len(parts) >= 2 and parts[0] == "status" and parts[1].isdigit():
            status = int(parts[1])
        elif len(parts) >= 2 and parts[0] == "slow":
            with contextlib.suppress(ValueError):
                await asyncio.sleep(float(parts[1]))
        call = ReceivedCall(request.url.path, dict(request.headers), body, status, time.time())
        self.calls.append(call)
        if self.log_path is not None:
            line = {"at": call.at, "path": call.path, "status": status, "headers": call.headers}
            with contextlib.suppress(ValueError):
                line["body"] = json.loads(body)
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(json.dumps(line, ensure_ascii=False) + "\n")
        return JSONResponse({"received": status == 200}, status_code=status)

    async def start(self) -> None:
        """Serve until :meth:`stop`."""
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST", "PUT"])])
        config = uvicorn.Config(app, host=LOOPBACK, port=self.port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="webhook-receiver")
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None


async def _serve(mail: MailReceiver, hooks: WebhookReceiver) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    mail.start()
    await hooks.start()
    print(
        f"receivers: SMTP on {LOOPBACK}:{mail.port} (mails in {mail.folder}), "
        f"webhooks on {hooks.url('/')} (log {hooks.log_path})",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await hooks.stop()
        mail.stop()
        print("receivers: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m shared.devstack.receivers``: the local stack's SMTP server and webhook receiver."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.devstack.receivers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--webhook-port", type=int, required=True)
    parser.add_argument("--mail-dir", type=Path, required=True, help="one .eml file per mail received")
    parser.add_argument("--webhook-log", type=Path, required=True, help="one JSON line per webhook call")
    args = parser.parse_args(argv)
    args.webhook_log.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        _serve(
            MailReceiver(port=args.smtp_port, folder=args.mail_dir),
            WebhookReceiver(port=args.webhook_port, log_path=args.webhook_log),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
