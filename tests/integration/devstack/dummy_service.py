"""A stand-in for a service in runner tests: serves /readyz and echoes its settings at /env.

Run by the runner as ``python -m tests.integration.devstack.dummy_service``. It finds its name
from the one ``<NAME>__HTTP__PORT`` variable it was given; with ``DUMMY_CRASH=<name>`` that
instance exits with code 3 three seconds after it first answered /readyz.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

SERVICES = ("intake", "dispatch", "tracking", "reporting", "notifications")


def _own_name() -> str:
    """The service name this process stands in for."""
    names = [name for name in SERVICES if f"{name.upper()}__HTTP__PORT" in os.environ]
    if len(names) != 1:
        sys.exit(f"dummy_service: expected exactly one <NAME>__HTTP__PORT variable, got {names}")
    return names[0]


_crash_armed = threading.Event()


def _arm_crash() -> None:
    """Start the planned crash once, after the runner has seen this instance ready."""
    if os.environ.get("DUMMY_CRASH") == _own_name() and not _crash_armed.is_set():
        _crash_armed.set()
        threading.Timer(3.0, os._exit, args=(3,)).start()


class Handler(BaseHTTPRequestHandler):
    """GET /readyz -> 200; GET /env -> the runner-provided variables as JSON."""

    def do_GET(self) -> None:
        """Answer the two paths the tests use."""
        if self.path == "/readyz":
            _arm_crash()
            body = b'{"status": "ready"}'
        elif self.path == "/env":
            prefix = _own_name().upper() + "__"
            body = json.dumps({k: v for k, v in os.environ.items() if k.startswith(prefix)}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> int:
    """Serve until SIGTERM (exit 0) or until the planned crash (exit 3)."""
    name = _own_name()
    port = int(os.environ[f"{name.upper()}__HTTP__PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def on_term(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    # The runner's drain asks services to stop taking requests with SIGUSR1; a stand-in has none.
    signal.signal(signal.SIGUSR1, lambda signum, frame: print(f"dummy {name} draining", flush=True))
    print(f"dummy {name} serving on {port}", flush=True)
    server.serve_forever()
    server.server_close()
    print(f"dummy {name} stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
