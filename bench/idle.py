"""Idle cost: what the whole stack burns with no traffic at all (issue #20: at most 3 % of one core).

Starts the whole system as ``tests.support.system.System`` does for the end-to-end benchmark
(real PostgreSQL, the local Tansu broker, every service as a process, broker traffic direct),
sends nothing, waits ``--settle`` seconds for start-up work to finish, then reads each process's
CPU time (utime + stime from ``/proc/<pid>/stat``) at the start and the end of ``--duration``
seconds and reports it as % of one core, per process and in total.

The target counts *the services and the broker*; PostgreSQL (postmaster plus backends, live and
reaped) is measured and stated apart, as are the notifications service's local receivers (a
test SMTP server and webhook endpoint, not part of the stack).

``python -m bench.idle [--duration 60] [--settle 20]`` writes ``bench/results/idle.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.cpu import Part, cpu_seconds, infrastructure_parts

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_PERCENT = 3.0
# Parts counted against the target besides the services.
COUNTED_INFRASTRUCTURE = ("broker",)


def _parts(system: Any) -> list[Part]:
    parts = [Part(name, svc.pid) for name, svc in system.services.items() if svc.pid is not None]
    parts += infrastructure_parts(system.postgres, system.kafka)
    receivers = getattr(system, "receivers", None)
    if receivers is not None and receivers.poll() is None:
        parts.append(Part("receivers (test SMTP/webhook)", receivers.pid, tree=True))
    return parts


def measure(parts: list[Part], *, duration_s: float) -> dict[str, float]:
    """% of one core each part used over ``duration_s`` seconds of wall time."""
    before = cpu_seconds(parts)
    started = time.monotonic()
    time.sleep(duration_s)
    elapsed = time.monotonic() - started
    after = cpu_seconds(parts)
    return {name: round(100 * (after[name] - before[name]) / elapsed, 2) for name in before}


def summarise(percent: dict[str, float], services: list[str]) -> dict[str, Any]:
    """The per-process figures plus the total the target counts (services + broker)."""
    counted = [name for name in percent if name in services or name in COUNTED_INFRASTRUCTURE]
    total = round(sum(percent[name] for name in counted), 2)
    return {
        "percent_of_one_core": percent,
        "counted": counted,
        "services_and_broker_percent": total,
        "postgresql_percent": percent.get("postgresql"),
        "target_percent": TARGET_PERCENT,
        "within_target": total <= TARGET_PERCENT,
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    lines = [
        f"Idle for {result['duration_s']:g} s after {result['settle_s']:g} s settling; "
        "CPU from /proc (utime+stime), % of one core.",
        "",
        "| process | % of one core |",
        "| --- | ---: |",
    ]
    for name, value in result["percent_of_one_core"].items():
        mark = "" if name in result["counted"] else " (not counted)"
        lines.append(f"| {name}{mark} | {value:.2f} |")
    lines.append(
        f"| **services + broker** | **{result['services_and_broker_percent']:.2f}** "
        f"(target ≤ {result['target_percent']:g}) |"
    )
    return "\n".join(lines)


def parse_env(pairs: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``KEY=VALUE`` (every service) and ``service:KEY=VALUE`` (one) -> (env, per-service env)."""
    common: dict[str, str] = {}
    per_service: dict[str, dict[str, str]] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        service, _, name = key.rpartition(":")
        (per_service.setdefault(service, {}) if service else common)[name] = value
    return common, per_service


def run(*, duration_s: float = 60.0, settle_s: float = 20.0, env: list[str] | None = None) -> dict[str, Any]:
    """Start the whole system, let it settle, measure it idle, stop it.

    ``env``: settings to try (``KEY=VALUE`` for every service, ``service:KEY=VALUE`` for one;
    keys without the service prefix, e.g. ``KAFKA__FETCH_MAX_WAIT_MS=500``).
    """
    from tests.support.system import ALL_SERVICES, System

    common, per_service = parse_env(env or [])
    system = System(services=ALL_SERVICES, proxy=False, env=common, service_env=per_service)
    system.start()
    try:
        time.sleep(settle_s)
        parts = _parts(system)
        load_before = os.getloadavg()
        percent = measure(parts, duration_s=duration_s)
    finally:
        system.stop()
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": duration_s,
        "settle_s": settle_s,
        "env": env or [],
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in load_before]},
        **summarise(percent, list(ALL_SERVICES)),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.idle``: run and write ``bench/results/idle.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds waited after start-up")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="[SERVICE:]KEY=VALUE",
        help="a setting to try, e.g. KAFKA__FETCH_MAX_WAIT_MS=500 or dispatch:TIMERS__POLL_INTERVAL_S=1",
    )
    args = parser.parse_args(argv)
    result = run(duration_s=args.duration, settle_s=args.settle, env=args.env)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "idle.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
