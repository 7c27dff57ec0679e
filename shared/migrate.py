"""Apply every service's migrations: ``python -m shared.migrate --database-url URL [SERVICE ...]``.

Each service owns one PostgreSQL schema named after it, with its own Alembic
history and version table inside that schema. Runs are serialised with an
advisory lock, so several replicas (or a Kubernetes Job and a developer) can
run this at once safely.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

SERVICES = ("intake", "dispatch", "tracking", "reporting", "notifications")
ROOT = Path(__file__).resolve().parent.parent
_LOCK_KEY = 0x48415A  # "HAZ"


def alembic_config(service: str, connection: Connection | None = None) -> Config:
    """The Alembic configuration of one service's migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "services" / service / "migrations"))
    cfg.attributes["schema"] = service
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection, service: str, revision: str) -> None:
    connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    command.upgrade(alembic_config(service, connection), revision)


async def migrate(database_url: str, services: tuple[str, ...] = SERVICES, revision: str = "head") -> None:
    """Bring the given services' schemas to ``revision``."""
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]
    engine = create_async_engine(database_url)
    try:
        for service in services:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade, service, revision)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m shared.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(SERVICES)} (default: all)")
    parser.add_argument("--database-url", default=os.environ.get("HAZARD_DATABASE_URL"))
    parser.add_argument("--revision", default="head")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or HAZARD_DATABASE_URL) is required")
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    services = tuple(args.services) or SERVICES
    asyncio.run(migrate(args.database_url, services, args.revision))
    print(f"migrated: {', '.join(services)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
