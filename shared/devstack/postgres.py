"""A real PostgreSQL server run as a local process, for the one-command stack and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import asyncpg  # type: ignore[import-untyped, unused-ignore]

from shared.devstack._process import pid_alive, run_sync, tail

StopMode = Literal["smart", "fast", "immediate"]

DEFAULT_USER = "hazard"
DEFAULT_DATABASE = "hazard"
SERVER_OS_USER_ENV = "HAZARD_PG_OS_USER"
BINDIR_ENV = "HAZARD_PG_BINDIR"
_CONF_NAME = "hazard.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_NAME}'\n"
_SOCKET_PATH_MAX = 107
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,62}$")
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,
}


class PostgresError(RuntimeError):
    """Raised when the local PostgreSQL cannot be found, initialised, started or stopped."""


def _has_server(bindir: Path) -> bool:
    """Return True when ``bindir`` holds both ``initdb`` and ``postgres``."""
    return (bindir / "initdb").is_file() and (bindir / "postgres").is_file()


def _version_key(path: str) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin paths, newest last."""
    version = Path(path).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_bindir() -> Path:
    """Locate PostgreSQL server binaries: env, system packages, pg_config, then the pgserver wheel."""
    override = os.environ.get(BINDIR_ENV)
    if override:
        path = Path(override)
        if not _has_server(path):
            raise PostgresError(f"{BINDIR_ENV}={override!r} has no initdb and postgres binaries")
        return path
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if _has_server(Path(candidate)):
            return Path(candidate)
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(result.stdout.strip())
        if result.returncode == 0 and _has_server(path):
            return path
    return _pgserver_bindir()


def _pgserver_bindir() -> Path:
    """Return the binaries shipped in the ``pgserver`` wheel (the fallback with no system PostgreSQL)."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        raise PostgresError(
            "No PostgreSQL server binaries found (looked at $HAZARD_PG_BINDIR, /usr/lib/postgresql/*/bin "
            "and pg_config). Install the embedded server with `uv sync --extra embedded-postgres`, "
            "or install PostgreSQL and set HAZARD_PG_BINDIR to its bin directory."
        ) from exc
    path = Path(POSTGRES_BIN_PATH)
    if not _has_server(path):
        raise PostgresError(f"the pgserver package has no server binaries at {path}")
    return path


def _quote_ident(name: str) -> str:
    """Quote a database name after checking it is a plain identifier."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"database name {name!r} must be 1-63 letters, digits, '_' or '-'")
    return '"' + name + '"'


class LocalPostgres:
    """One PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``.

    As root the server runs as the unprivileged OS user ``postgres`` (override with
    ``$HAZARD_PG_OS_USER``), because initdb and postgres refuse to run as root. fsync stays
    on unless ``fast=True``, which turns off fsync, synchronous_commit and full_page_writes
    for unit-speed tests that do not measure durability.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int,
        log_path: Path | None = None,
        fast: bool = False,
        user: str = DEFAULT_USER,
        bindir: Path | None = None,
        startup_timeout: float = 60.0,
        extra_settings: Mapping[str, str] | None = None,
    ) -> None:
        """Describe a cluster; nothing is created or started until ``init``/``start``.

        ``extra_settings`` are added to (or override) the written settings, values as they appear
        in ``postgresql.conf`` (e.g. ``{"shared_preload_libraries": "'pg_stat_statements'"}``).
        """
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.log_path = Path(log_path).absolute() if log_path else self.data_dir.parent / "postgres.log"
        self.fast = fast
        self.user = user
        self.startup_timeout = startup_timeout
        self.extra_settings = dict(extra_settings or {})
        self._bindir = bindir
        self._proc: subprocess.Popen[bytes] | None = None

    # -- locations -----------------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        """The directory holding initdb, postgres and pg_ctl."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def socket_dir(self) -> Path:
        """Directory for the unix socket: the data dir, or /tmp/hazard-pg-<port> if that path is too long."""
        socket_file = f".s.PGSQL.{self.port}"
        if len(str(self.data_dir / socket_file)) <= _SOCKET_PATH_MAX:
            return self.data_dir
        return Path(f"/tmp/hazard-pg-{self.port}")

    def url(self, database: str = DEFAULT_DATABASE, driver: str = "postgresql+asyncpg") -> str:
        """Return a connection URL, by default the SQLAlchemy asyncpg form."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = DEFAULT_DATABASE) -> str:
        """Return a plain libpq/asyncpg DSN (``postgresql://…``)."""
        return self.url(database, driver="postgresql")

    # -- running as an unprivileged user --------------------------------------------------

    def _server_account(self) -> pwd.struct_passwd | None:
        """Return the OS account the server runs as, or None to run as ourselves."""
        if os.geteuid() != 0:
            return None
        name = os.environ.get(SERVER_OS_USER_ENV, "postgres")
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise PostgresError(
                f"running as root, but there is no OS user {name!r} to run PostgreSQL as "
                f"(initdb refuses root); create one or set {SERVER_OS_USER_ENV}"
            ) from None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        """Wrap a command so it runs as the server's OS user when we are root."""
        account = self._server_account()
        if account is None:
            return argv
        setpriv = shutil.which("setpriv")
        if setpriv:
            # setpriv execs in place, so the child pid is the server's own pid.
            return [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", *argv]
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", account.pw_name, "--", *argv]
        raise PostgresError("running as root needs setpriv or runuser to start PostgreSQL as another user")

    def _give_to_server_user(self, path: Path) -> None:
        """Hand a path we created to the server's OS user (no-op when not root)."""
        account = self._server_account()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _check_reachable(self) -> None:
        """Fail early and clearly if the server's OS user cannot reach the data directory."""
        account = self._server_account()
        if account is None:
            return
        for parent in self.data_dir.parents:
            mode = parent.stat()
            if mode.st_uid == account.pw_uid:
                continue
            if not mode.st_mode & 0o001:
                raise PostgresError(
                    f"PostgreSQL runs as OS user {account.pw_name!r}, which cannot enter {parent} "
                    f"(mode {oct(mode.st_mode & 0o777)}); put the data directory somewhere it can reach "
                    f"or `chmod o+x {parent}`"
                )

    # -- lifecycle -------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        """Return True when ``data_dir`` already holds a cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    def init(self) -> bool:
        """Create the cluster if it does not exist yet; return True when it was created now."""
        if self.is_initialized():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._give_to_server_user(self.data_dir)
        self._check_reachable()
        base = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            f"--username={self.user}",
            "--encoding=UTF8",
        ]
        errors = []
        for locale in ("C.UTF-8", "C"):
            result = subprocess.run(
                self._as_server_user([*base, f"--locale={locale}"]),
                cwd=self.data_dir,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                break
            errors.append(f"--locale={locale}: {result.stderr.strip()}")
            # initdb leaves a partial cluster behind on some failures; start clean for the retry.
            for child in self.data_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            raise PostgresError("initdb failed:\n" + "\n".join(errors))
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Settings written by shared.devstack on every start.\n" + _INCLUDE_LINE)
        return True

    def _write_config(self) -> None:
        """(Re)write the settings this object controls; read by the server on start."""
        durable = "off" if self.fast else "on"
        lines = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "fsync": durable,
            "synchronous_commit": durable,
            "full_page_writes": durable,
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "log_min_messages": "warning",
            **self.extra_settings,
        }
        conf = self.data_dir / _CONF_NAME
        conf.write_text("".join(f"{key} = {value}\n" for key, value in lines.items()))
        self._give_to_server_user(conf)

    def pid(self) -> int | None:
        """Return the running postmaster's pid from ``postmaster.pid``, or None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            pid = int(first.strip())
        except (OSError, IndexError, ValueError):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        return pid if comm.startswith("postgres") and pid_alive(pid) else None

    def _remove_stale_lock(self) -> None:
        """Remove ``postmaster.pid`` left by a postmaster killed with -9 whose zombie nobody reaped.

        PostgreSQL refuses to start while the pid in it exists, and a zombie exists until its parent
        (here whoever inherited it: often an init that does not reap) waits for it. Removed only when
        that pid is dead or a zombie and no live process works in the data directory (backends exit
        once their postmaster is gone).
        """
        lock = self.data_dir / "postmaster.pid"
        try:
            pid = int(lock.read_text().splitlines()[0].strip())
        except (OSError, IndexError, ValueError):
            return
        if pid_alive(pid) or self._processes_in_data_dir():
            return
        lock.unlink(missing_ok=True)
        for socket_lock in {*self.socket_dir.glob(".s.PGSQL.*.lock"), *self.data_dir.glob(".s.PGSQL.*.lock")}:
            socket_lock.unlink(missing_ok=True)
            socket_lock.with_suffix("").unlink(missing_ok=True)

    def _processes_in_data_dir(self) -> list[int]:
        """Live pids whose working directory is the data directory (a postmaster and its backends)."""
        found = []
        target = str(self.data_dir.resolve())
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cwd = os.readlink(entry / "cwd")
                except OSError:
                    continue
                if cwd == target and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
        return found

    def is_running(self) -> bool:
        """Return True when a postmaster serves this data directory."""
        return self.pid() is not None

    def start(self) -> None:
        """Start the server (initialising the cluster on first use) and wait until it answers SQL."""
        if self._proc is not None and self._proc.poll() is None:
            return
        running = self.pid()
        if running is not None:
            raise PostgresError(
                f"a PostgreSQL (pid {running}) already serves {self.data_dir}; stop it first "
                "(`python -m shared.devstack stop` for the runner's cluster)"
            )
        self.init()
        self._remove_stale_lock()
        self._check_reachable()
        self._write_config()
        if self.socket_dir != self.data_dir:
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            self._give_to_server_user(self.socket_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._as_server_user([str(self.bindir / "postgres"), "-D", str(self.data_dir)]),
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C at the terminal reaches the runner, which stops us in order.
                start_new_session=True,
            )
        try:
            run_sync(self._wait_ready)
        except BaseException:
            self.stop(mode="immediate")
            raise

    async def _wait_ready(self) -> None:
        """Poll until ``SELECT 1`` works, then make sure the default database exists."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise PostgresError(
                    f"PostgreSQL exited with code {self._proc.returncode} while starting; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                conn = await asyncpg.connect(self.dsn("postgres"), timeout=2)
            except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                last_error = exc
                await asyncio.sleep(0.05)
                continue
            try:
                await conn.fetchval("SELECT 1")
                exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DEFAULT_DATABASE)
                if not exists:
                    await conn.execute(f"CREATE DATABASE {_quote_ident(DEFAULT_DATABASE)}")
            finally:
                await conn.close()
            return
        raise PostgresError(
            f"PostgreSQL on port {self.port} not ready after {self.startup_timeout:.0f}s "
            f"({last_error!r}); log {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, mode: StopMode = "fast", timeout: float = 60.0) -> None:
        """Stop the server (``pg_ctl stop -m mode``), falling back to signals; no-op if not running."""
        if self.is_running():
            pg_ctl = self.bindir / "pg_ctl"
            stopped = False
            if pg_ctl.is_file():
                result = subprocess.run(
                    self._as_server_user(
                        [
                            str(pg_ctl),
                            "stop",
                            "-D",
                            str(self.data_dir),
                            "-m",
                            mode,
                            "-w",
                            "-t",
                            str(int(timeout)),
                        ]
                    ),
                    cwd=self.data_dir,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                stopped = result.returncode == 0 or not self.is_running()
            if not stopped:
                self._signal_stop(mode, timeout)
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            self._proc = None
        if self.socket_dir != self.data_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def _signal_stop(self, mode: StopMode, timeout: float) -> None:
        """Stop the postmaster with the signal for ``mode``, then SIGKILL its group after ``timeout``."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, _STOP_SIGNALS[mode])
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)

    def restart(self) -> None:
        """Stop (fast) and start again; data on disk survives."""
        self.stop()
        self.start()

    # -- databases -------------------------------------------------------------------------

    async def adatabase_exists(self, name: str) -> bool:
        """Return True when a database of this name exists."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    async def acreate_database(
        self, name: str, template: str | None = None, busy_timeout: float = 10.0
    ) -> None:
        """Create a database, optionally as a copy of ``template`` (waits while the template is busy)."""
        statement = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            statement += f" TEMPLATE {_quote_ident(template)}"
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            deadline = time.monotonic() + busy_timeout
            while True:
                try:
                    await conn.execute(statement)
                    return
                except asyncpg.ObjectInUseError as exc:
                    # Copying needs the template to have no sessions; someone's pool may still be closing.
                    if time.monotonic() > deadline:
                        raise PostgresError(
                            f"cannot copy template {template!r}: other sessions are connected to it "
                            "(dispose engines/pools on the template when done with it)"
                        ) from exc
                    await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def adrop_database(self, name: str) -> None:
        """Drop a database if it exists, disconnecting its sessions."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()

    async def aterminate_sessions(self, name: str) -> int:
        """Disconnect every session on a database; return how many were ended."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            ended = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            return len(ended)
        finally:
            await conn.close()

    def database_exists(self, name: str) -> bool:
        """Sync form of ``adatabase_exists``."""
        return run_sync(lambda: self.adatabase_exists(name))

    def create_database(self, name: str, template: str | None = None) -> None:
        """Sync form of ``acreate_database`` (safe to call inside a running event loop)."""
        run_sync(lambda: self.acreate_database(name, template))

    def drop_database(self, name: str) -> None:
        """Sync form of ``adrop_database`` (safe to call inside a running event loop)."""
        run_sync(lambda: self.adrop_database(name))
