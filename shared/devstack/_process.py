"""Process helpers shared by the local PostgreSQL, broker and runner."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_private(factory)
    # A loop already runs in this thread: give the coroutine a loop of its own in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="devstack") as pool:
        return pool.submit(_run_private, factory).result()


def _run_private(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a new loop without touching the thread's current-loop setting."""
    # Unlike asyncio.run, a Runner with a loop factory leaves set_event_loop alone, so a test
    # framework's loop (pytest-asyncio) is not reset by a sync fixture that starts a server.
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(factory())


def pid_alive(pid: int) -> bool:
    """Return True when a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_cmdline(pid: int) -> list[str] | None:
    """Return a process's argv from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send a signal to a whole process group, ignoring one that is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_group(proc: subprocess.Popen[bytes], *, timeout: float) -> int:
    """Stop a child started in its own session: SIGTERM, then SIGKILL after ``timeout``; reap it."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        # A stopped (paused) process only acts on SIGTERM once continued.
        signal_group(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    # Sweep helpers the leader may have left in its group.
    signal_group(proc.pid, signal.SIGKILL)
    return proc.returncode


def tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a text file, or a note when it does not exist."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
