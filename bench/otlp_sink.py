"""A minimal OTLP/HTTP trace receiver for benchmarks: accepts every export, counts the spans, keeps none.

The end-to-end benchmark with ``--tracing`` points every service at it
(``<SERVICE>__TRACING__OTLP_ENDPOINT``), so that the cost measured is the services' whole tracing
cost (spans, context in the outbox and headers, batching, protobuf encoding and the POSTs), without
a collector's cost on the same machine: bodies are kept and decoded only when the figures are asked.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class OtlpSink:
    """``with OtlpSink() as sink:`` serves ``sink.endpoint`` until the block ends."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.spans = 0
        self.requests = 0
        self.bytes = 0
        self.trace_ids: set[bytes] = set()
        self._bodies: list[bytes] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:  # decoded after the run: a collector's work is not the services'
                    sink.requests += 1
                    sink.bytes += len(body)
                    sink._bodies.append(body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.endpoint = f"http://{host}:{self.server.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-sink", daemon=True)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def figures(self) -> dict[str, int]:
        """Requests, spans, distinct traces and bytes received so far (decodes what is pending)."""
        with self._lock:
            bodies, self._bodies = self._bodies, []
            for body in bodies:
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        self.spans += len(scope.spans)
                        self.trace_ids.update(span.trace_id for span in scope.spans)
            return {
                "export_requests": self.requests,
                "spans": self.spans,
                "traces": len(self.trace_ids),
                "bytes": self.bytes,
            }
