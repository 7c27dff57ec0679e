"""CPU seconds used by each part of a running system, to say where a hazard's cost goes.

A throughput figure on a shared 2-core machine says little on its own: every part (the four
services, PostgreSQL, the broker, the load generator) competes for the same cores. CPU seconds
per hazard, by part, do not depend on how the cores were shared, and their sum bounds the rate:
``cores / total CPU seconds per hazard`` hazards/s is the most this machine can do with this code.

PostgreSQL is the postmaster plus its live backends plus the backends it has already reaped
(the postmaster's ``cutime``/``cstime``); the broker likewise includes its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


@dataclass(frozen=True)
class Part:
    """One measured part: a name and a pid (``tree``: count its descendants too)."""

    name: str
    pid: int
    tree: bool = False


def cpu_seconds(parts: list[Part]) -> dict[str, float]:
    """User + system CPU seconds so far by part (``tree``: plus its live and reaped descendants).

    One pass over ``/proc`` for all parts, whatever the number of processes.
    """
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                stats[int(entry)] = fields
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)

    def cpu_s(pid: int, tree: bool) -> float:
        fields = stats.get(pid)
        if fields is None:
            return 0.0
        # After the ")": [0] state, [1] ppid, ..., [11] utime, [12] stime, [13] cutime, [14] cstime.
        ticks = int(fields[11]) + int(fields[12])
        if not tree:
            return ticks / _TICKS
        ticks += int(fields[13]) + int(fields[14])
        return ticks / _TICKS + sum(cpu_s(child, True) for child in children.get(pid, []))

    return {part.name: cpu_s(part.pid, part.tree) for part in parts}


class CpuMeter:
    """Snapshots of CPU seconds by part; the difference between two is what a phase cost."""

    def __init__(self, parts: list[Part], *, include_self: bool = True) -> None:
        self.parts = parts
        self.include_self = include_self

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far, by part name."""
        out = cpu_seconds(self.parts)
        if self.include_self:
            times = os.times()
            out["load generator"] = times.user + times.system
        return out

    @staticmethod
    def per_item_ms(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
        """CPU milliseconds per item, by part, plus ``total``."""
        per = {name: round((after[name] - before.get(name, 0.0)) * 1000 / max(1, items), 3) for name in after}
        per["total"] = round(sum(per.values()), 3)
        return per


def system_parts(system: object) -> list[Part]:
    """The parts of a ``tests.support.system.System``: its services, PostgreSQL and the broker."""
    parts: list[Part] = []
    for name, service in getattr(system, "services", {}).items():
        if service.pid is not None:
            parts.append(Part(name, service.pid))
    return parts + infrastructure_parts(getattr(system, "postgres", None), getattr(system, "kafka", None))


def infrastructure_parts(postgres: Any, kafka: Any) -> list[Part]:
    """PostgreSQL and the broker (``LocalPostgres``, ``LocalKafka``; either may be None), with their children."""
    parts: list[Part] = []
    pg = postgres.pid() if postgres is not None else None
    if pg is not None:
        parts.append(Part("postgresql", pg, tree=True))
    if kafka is not None and kafka.pid is not None:
        parts.append(Part("broker", kafka.pid, tree=True))
    return parts


class CpuSampler:
    """CPU seconds by part every ``interval_s`` in the background, for per-window CPU % afterwards.

    Read from ``/proc`` only (no statement on the database under test). ``window`` gives each
    part's CPU % of one core between the samples nearest a window's ends.
    """

    def __init__(self, parts: list[Part], *, interval_s: float = 1.0) -> None:
        self.meter = CpuMeter(parts, include_self=False)
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample now (unix time, CPU seconds by part)."""
        self.samples.append((time.time(), self.meter.snapshot()))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Sample in the background until ``stop``."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sampling (one last sample is taken)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample()

    def window(self, start: float, end: float) -> dict[str, int]:
        """CPU % of one core by part between the samples nearest ``start`` and ``end`` (unix seconds)."""
        if len(self.samples) < 2:
            return {}
        first = min(self.samples, key=lambda s: abs(s[0] - start))
        last = min(self.samples, key=lambda s: abs(s[0] - end))
        if last[0] <= first[0]:
            return {}
        span = last[0] - first[0]
        return {name: round(100 * (last[1][name] - first[1].get(name, 0.0)) / span) for name in last[1]}
