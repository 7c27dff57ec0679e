"""Progress of long work: a bar on a terminal, a line every few seconds in a log.

``Progress`` is told how far the work got (:meth:`Progress.update`, :meth:`Progress.advance`,
or a counter it reads itself while :meth:`Progress.ticking`); the stage may change as the work
goes (``stage="departments, round 2"``). On a terminal (the stream is a tty) it redraws one line
at most ten times a second::

    demo load  [##########..........]  50%  150/300 reports  12.4/s  ETA 12 s  (sending reports)

Otherwise (a log, a pipe, CI) it writes a line (to ``logger`` when given, else to the stream
with an ISO 8601 UTC time) every ``interval_s`` (10 s by default) and one
at the end, so a long run shows it is alive without flooding the log::

    demo load: 150/300 reports (50%), 12.4/s, ETA 12 s, sending reports
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TextIO

BAR_WIDTH = 24
REDRAW_S = 0.1


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """How far a piece of work is: a bar on a terminal, periodic log lines otherwise."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        interval_s: float = 10.0,
        tty: bool | None = None,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.logger = logger
        self.clock = clock
        self.done = 0
        self.stage: str | None = None
        self.started = clock()
        self._last_out = float("-inf")
        self._finished = False

    # ------------------------------------------------------------------ telling it

    def update(self, done: int, *, stage: str | None = None, total: int | None = None) -> None:
        """The work has reached ``done`` (and this stage, and this total, when given)."""
        self.done = done
        if total is not None:
            self.total = total
        if stage is not None and stage != self.stage:
            self.stage = stage
            if not self.tty:  # a new stage is worth a line of its own in a log
                self._out(force=True)
                return
        self._out()

    def advance(self, n: int = 1, *, stage: str | None = None) -> None:
        """``n`` more units done."""
        self.update(self.done + n, stage=stage)

    def finish(self, *, stage: str | None = None) -> None:
        """The last line (the bar completed on a terminal)."""
        if self._finished:
            return
        if stage is not None:
            self.stage = stage
        self._finished = True
        self._out(force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    @contextlib.asynccontextmanager
    async def ticking(
        self, read: Callable[[], int], *, period_s: float = REDRAW_S
    ) -> AsyncIterator[Progress]:
        """While the block runs, read the count from ``read()`` every ``period_s``; finish at the end."""

        async def tick() -> None:
            while True:
                self.update(read())
                await asyncio.sleep(period_s)

        task = asyncio.create_task(tick(), name=f"progress-{self.what}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.update(read())
            self.finish()

    # ------------------------------------------------------------------ showing it

    def line(self) -> str:
        """What is shown now, without the bar (the log line)."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.done}/{self.total}{unit}" if self.total else f"{self.done}{unit}"]
        if self.total:
            parts[0] += f" ({min(100, 100 * self.done // max(self.total, 1))}%)"
        parts.append(f"{rate:,.1f}/s")
        if self.total and rate > 0 and self.done < self.total and not self._finished:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if self._finished:
            parts.append(f"took {_duration(elapsed)}")
        if self.stage:
            parts.append(self.stage)
        return f"{self.what}: " + ", ".join(parts)

    def bar(self) -> str:
        """The terminal line: a bar when the total is known, a count otherwise."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            filled = min(BAR_WIDTH, BAR_WIDTH * self.done // max(self.total, 1))
            head = (
                f"{self.what}  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                f"{min(100, 100 * self.done // max(self.total, 1)):3d}%  {self.done}/{self.total}{unit}"
            )
        else:
            head = f"{self.what}  {self.done}{unit}"
        tail = f"  {rate:,.1f}/s"
        if self.total and rate > 0 and self.done < self.total and not self._finished:
            tail += f"  ETA {_duration((self.total - self.done) / rate)}"
        if self._finished:
            tail += f"  took {_duration(elapsed)}"
        if self.stage:
            tail += f"  ({self.stage})"
        return head + tail

    def _out(self, *, force: bool = False) -> None:
        now = self.clock()
        if self.tty:
            if force or now - self._last_out >= REDRAW_S:
                self._last_out = now
                self.stream.write("\r\x1b[2K" + self.bar())
                self.stream.flush()
        elif force or now - self._last_out >= self.interval_s:
            self._last_out = now
            if self.logger is not None:
                self.logger.info("%s", self.line())
            else:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                self.stream.write(f"{stamp} {self.line()}\n")
                self.stream.flush()
