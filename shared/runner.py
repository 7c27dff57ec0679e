"""Run one service process: the HTTP app (uvicorn) whose lifespan runs the broker, relay and loops."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from shared.logs import configure_logging
from shared.reference import ReferenceDataError
from shared.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


class QuietServer(uvicorn.Server):
    """uvicorn's server turning round once a second instead of ten times (#20: an idle stack costs
    almost nothing); a stop signal still ends the wait at once.

    uvicorn's round only refreshes the Date header (once a second) and looks whether to stop.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            # A multiple of 10: every round refreshes the Date header, as uvicorn's every tenth did.
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=1.0)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._stop.set)


def serve(app: FastAPI, settings: ServiceSettings, *, service: str) -> None:
    """Serve until SIGINT/SIGTERM; shutdown drains in-flight work before the pool closes."""
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.kafka.graceful_timeout_s) + 5,
    )
    runtime = getattr(app.state, "runtime", None)
    if runtime is not None:
        # The local runner's drain: stop taking requests, keep consuming and relaying (SIGTERM stops).
        signal.signal(signal.SIGUSR1, lambda signum, frame: runtime.stop_accepting())
    QuietServer(config).run()


def run_service(service: str, settings_class: type[S], create_app: Callable[[S], FastAPI]) -> int:
    """Entry point of ``python -m services.<name>``: settings, reference data, app; clear errors, no tracebacks."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        prefix = settings_class.model_config.get("env_prefix", "")
        lines = [f"{service}: invalid settings (environment variables {prefix}*):"]
        for err in exc.errors():
            name = prefix + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']}")
        print("\n".join(lines), file=sys.stderr)
        return 2
    configure_logging(service, level=settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except ReferenceDataError as exc:
        print(f"{service}: reference data is invalid, not starting: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{service}: configuration is invalid, not starting: {exc}", file=sys.stderr)
        return 2
    tune_gc()
    profile_dir = os.environ.get(PROFILE_DIR_ENV)
    if not profile_dir:
        serve(app, settings, service=service)
        return 0
    # A developer's profile of the whole run (``bench.profile_statements --python``): every function's
    # CPU, dumped when the service stops; cProfile roughly doubles the cost of Python calls.
    # uvicorn raises the stop signal again once it has shut down; this handler turns it into an exit
    # that runs the ``finally`` below instead of the default handler's instant death.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_on_signal)
    profiler = cProfile.Profile(time.process_time)  # CPU, not the wall clock: waiting is not work
    profiler.enable()
    try:
        serve(app, settings, service=service)
    finally:
        profiler.disable()
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(Path(profile_dir) / f"{service}.prof"))
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


PROFILE_DIR_ENV = "HAZARD_PROFILE_DIR"
"""When set, a service runs under cProfile and writes ``<dir>/<service>.prof`` as it stops."""


GC_GEN0_THRESHOLD = 50_000


def tune_gc(gen0_threshold: int = GC_GEN0_THRESHOLD) -> None:
    """Collect cycles less often, and never look again at what start-up built.

    A consumer holds a batch of up to thousands of parsed events while it allocates more, and
    CPython's default (a young-generation pass every 700 net allocations, each older pass walking
    everything alive) made the collector a large share of every service's CPU: parsing one event
    took 17 us with a batch alive instead of 5 us alone. Start-up objects (modules, the app,
    reference data) are frozen out of collection; passes run every 50,000 allocations.
    Measured on the end-to-end throughput phase (40 s): the four services' CPU per hazard
    fell from 1.10 to 0.89 ms; 200,000 gave no more.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 50, 100)
