"""Photo upload on loopback: latency of ``POST /api/v1/photos`` and the intake process's memory.

One intake process (private PostgreSQL with fsync on, private Tansu, the directory photo store)
receives photos of about 1, 5 and 9.5 MB (12 MP JPEGs, the size set by the JPEG quality),
uploaded one after another by a client streaming each file from disk. The process's resident
memory (``VmRSS``) is sampled every 5 ms: the figure is how much it grows above its level after
a warm-up upload, per file size. If the body were held in memory it would grow with the file;
streamed (spooled to disk by the multipart parser), the growth is the decoder's, set by the
pixel count, the same for every file size.

    flock /tmp/hazard-bench.lock .venv/bin/python -m bench.intake_photo_upload --uploads 10

Printed and written to ``bench/results/intake_photo_upload.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from PIL import Image, ImageFilter

from bench._stack import private_stack, publish_results
from shared.devstack import free_port
from shared.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-photo-reporter"
SIZES_MB = (1.0, 5.0, 9.5)


def make_photo(target_mb: float, *, seed: int, width: int = 4000, height: int = 3000) -> bytes:
    """A 12 MP JPEG whose size is the nearest above ``target_mb`` the JPEG quality can reach."""
    rng = random.Random(seed)
    small = Image.frombytes("RGB", (width // 4, height // 4), rng.randbytes(width * height * 3 // 16))
    image = small.resize((width, height), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(0.6))
    best = b""
    for quality in range(5, 99, 2):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality)
        best = out.getvalue()
        if len(best) >= target_mb * 1_000_000:
            break
    return best


class RssSampler:
    """Samples a process's VmRSS (KiB) every few milliseconds in a thread."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        self.path = Path(f"/proc/{pid}/status")
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_kib(self) -> int:
        for line in self.path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss_kib())
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self.peak = self.rss_kib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _upload(client: httpx.Client, path: Path) -> float:
    started = time.perf_counter()
    with path.open("rb") as body:
        answer = client.post("/api/v1/photos", files={"file": (path.name, body, "image/jpeg")})
    elapsed = time.perf_counter() - started
    if answer.status_code != 201:
        raise RuntimeError(f"upload answered {answer.status_code}: {answer.text[:300]}")
    return elapsed


def _wait_ready(base: str, proc: subprocess.Popen[bytes], logs: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"intake did not become ready; see {logs}")
        time.sleep(0.3)


def main() -> None:
    """Start intake, upload each size ``--uploads`` times, and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=10, help="uploads of each size")
    args = parser.parse_args()
    load_at_start = round(os.getloadavg()[0], 2)
    with (
        private_stack("photos") as (postgres, kafka),
        tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp,
    ):
        work = Path(tmp)
        asyncio.run(migrate(postgres.url()))
        tokens = work / "tokens.yaml"
        entry = {
            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "principal": "gm-bench",
            "role": "reporter",
            "grid_id": "liuyue-01",
        }
        tokens.write_text(yaml.safe_dump([entry]))
        files: dict[float, list[Path]] = {}
        for size in SIZES_MB:
            # Distinct content per upload: the same bytes again would be the same photo.
            files[size] = []
            for n in range(args.uploads + 1):
                path = work / f"photo-{size}-{n}.jpg"
                path.write_bytes(make_photo(size, seed=int(size * 1000) + n))
                files[size].append(path)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE__")}
        env.update(
            {
                "INTAKE__DATABASE__URL": postgres.url(),
                "INTAKE__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "INTAKE__KAFKA__IDEMPOTENT_PRODUCER": "false",
                "INTAKE__HTTP__PORT": str(port),
                "INTAKE__AUTH__TOKENS_FILE": str(tokens),
                "INTAKE__LOG_LEVEL": "WARNING",
                "INTAKE__RATE_LIMIT__ENABLED": "false",
                "INTAKE__PHOTOS__DIRECTORY": str(work / "store"),
            }
        )
        log_path = work / "intake.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.intake"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        phases: dict[str, Any] = {}
        try:
            _wait_ready(base, proc, log_path)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                for size in SIZES_MB:
                    _upload(client, files[size][0])  # warm-up: imports, decoder buffers, pools
                    sampler = RssSampler(proc.pid)
                    before = sampler.rss_kib()
                    with sampler:
                        latencies = [_upload(client, path) for path in files[size][1:]]
                    after = sampler.rss_kib()
                    ordered = sorted(latencies)
                    phases[f"{size:g}MB"] = {
                        "file_bytes": round(statistics.fmean(p.stat().st_size for p in files[size][1:])),
                        "uploads": len(latencies),
                        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 1),
                        "max_ms": round(ordered[-1] * 1000, 1),
                        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
                        "rss_before_mib": round(before / 1024, 1),
                        "rss_peak_growth_mib": round((sampler.peak - before) / 1024, 1),
                        "rss_after_growth_mib": round((after - before) / 1024, 1),
                    }
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {"phases": phases, "load_average_at_start": load_at_start}
    lines = [
        "| photo | bytes | uploads | p50 ms | max ms | RSS before MiB | peak growth MiB | growth after MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, p in phases.items():
        lines.append(
            f"| {name} | {p['file_bytes']:,} | {p['uploads']} | {p['p50_ms']} | {p['max_ms']} | "
            f"{p['rss_before_mib']} | {p['rss_peak_growth_mib']} | {p['rss_after_growth_mib']} |"
        )
    publish_results(
        "intake_photo_upload", result, "\n".join(lines), note=f"load average {load_at_start} at start"
    )


if __name__ == "__main__":
    main()
