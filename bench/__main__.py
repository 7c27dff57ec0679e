"""``python -m bench`` (``make bench``): the end-to-end benchmark plus every per-service benchmark module.

Writes ``bench/results/report.md`` and ``bench/results/report.json``. ``--only NAME`` (repeatable)
selects: ``end_to_end`` (includes the raw ceiling), ``raw_ceiling`` (alone, on a private
stack), ``idle`` (the whole stack's CPU with no traffic, ``bench/idle.py``), or a per-service module ``bench/<intake|dispatch|tracking|reporting|notifications>_*.py``, which
is run as ``python -m bench.<module>`` and writes its own ``bench/results/<module>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from shared.progress import Progress

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SERVICE_PREFIXES = ("intake_", "dispatch_", "tracking_", "reporting_", "notifications_")
MODULE_TIMEOUT_S = 1200


def service_modules() -> list[str]:
    """The per-service benchmark modules present, sorted."""
    return sorted(path.stem for path in BENCH_DIR.glob("*.py") if path.stem.startswith(SERVICE_PREFIXES))


def run_module(name: str) -> dict[str, Any]:
    """Run ``python -m bench.<name>`` and collect its status, duration, output and JSON."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            [sys.executable, "-m", f"bench.{name}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=MODULE_TIMEOUT_S,
            check=False,
        )
        status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode})"
        output = result.stdout + ("\n" + result.stderr if result.returncode else "")
    except subprocess.TimeoutExpired as exc:
        status = f"timed out after {MODULE_TIMEOUT_S} s"
        output = (
            (exc.stdout or b"").decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
    figures_path = BENCH_DIR / "results" / f"{name}.json"
    figures = None
    if figures_path.is_file():
        try:
            figures = json.loads(figures_path.read_text())
        except ValueError:
            figures = None
    print(f"[bench] {name}: {status}", flush=True)
    return {
        "status": status,
        "seconds": round(time.monotonic() - started, 1),
        "stdout_tail": "\n".join(output.splitlines()[-40:]),
        "figures": figures,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="run only these (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list what can run and exit")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of maximum-throughput load")
    parser.add_argument("--rate", type=float, default=500.0, help="offered reports/s of the latency phase")
    parser.add_argument("--latency-duration", type=float, default=30.0, help="seconds of the latency phase")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (throughput phase)")
    parser.add_argument(
        "--tracing", action="store_true", help="end_to_end with every service recording and exporting spans"
    )
    args = parser.parse_args(argv)
    available = ["end_to_end", "raw_ceiling", "idle", *service_modules()]
    if args.list:
        print("\n".join(available))
        return 0
    unknown = [name for name in args.only if name not in available]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}", file=sys.stderr
        )
        return 2
    selected = args.only or ["end_to_end", "idle", *service_modules()]
    command = "python -m bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    failed = False
    if "end_to_end" in selected:
        from bench import end_to_end

        print("[bench] end_to_end: starting the system ...", flush=True)
        results["end_to_end"] = end_to_end.run(
            duration_s=args.duration,
            rate=args.rate,
            latency_duration_s=args.latency_duration,
            concurrency=args.concurrency,
            tracing=args.tracing,
        )
        failed |= bool(results["end_to_end"]["throughput"]["accounting"]["problems"])
    if "raw_ceiling" in selected and "end_to_end" not in selected:
        from bench import raw_ceiling

        code = raw_ceiling.main([])
        results["raw_ceiling"] = json.loads((BENCH_DIR / "results" / "raw_ceiling.json").read_text())
        failed |= code != 0
    if "idle" in selected:
        from bench import idle

        print("[bench] idle: starting the system, measuring it with no traffic ...", flush=True)
        results["idle"] = idle.run()
        (BENCH_DIR / "results" / "idle.json").write_text(json.dumps(results["idle"], indent=1))
        print(idle.table(results["idle"]), flush=True)
    modules = [name for name in selected if name.startswith(SERVICE_PREFIXES)]
    if modules:
        # Each module runs in its own process for minutes: say which one runs, and when each ends.
        progress = Progress("benchmark modules", total=len(modules), unit="modules", interval_s=60.0)
        results["modules"] = {}
        for done, name in enumerate(modules):
            progress.update(done, stage=f"running {name}")
            results["modules"][name] = run_module(name)
        progress.update(len(modules))
        progress.finish()
        failed |= any(m["status"] != "ok" for m in results["modules"].values())
    md, js = report.write(results, command=command.strip())
    print(md.read_text())
    print(f"[bench] wrote {md} and {js}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
