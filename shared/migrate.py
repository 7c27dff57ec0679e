"""Apply every service's migrations: ``python -m shared.migrate --database-url URL [SERVICE ...]``.

Each service owns one PostgreSQL schema named after it, with its own Alembic
history and version table inside that schema. Runs are serialised with an
advisory lock, so several replicas (or a Kubernetes Job and a developer) can
run this at once safely.

Run it as the schemas' owner. After each service's migrations, in the same
transaction, its login role ``hazard_<service>`` is created if missing and
granted the rows of its own schema only (:mod:`shared.roles`); a password in
``HAZARD_<SERVICE>_DB_PASSWORD`` is set on the role. ``--no-service-roles``
skips this (a database where the services still connect as the owner).
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

from shared import roles

SERVICES = roles.SERVICES
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


def _upgrade_admin(connection: Connection, revision: str, service_roles: bool) -> None:
    connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    command.upgrade(alembic_config(roles.ADMIN_SCHEMA, connection), revision)
    if service_roles:
        roles.grant_admin_schema(connection)


def _upgrade(
    connection: Connection, service: str, revision: str, service_roles: bool, password: str | None
) -> None:
    connection.execute(text("select pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    command.upgrade(alembic_config(service, connection), revision)
    schema_exists = connection.execute(text("select to_regnamespace(:s) is not null"), {"s": service})
    if service_roles and schema_exists.scalar_one():
        roles.ensure_service_role(connection, service, password)


async def migrate(
    database_url: str,
    services: tuple[str, ...] = SERVICES,
    revision: str = "head",
    *,
    service_roles: bool = True,
    passwords: dict[str, str] | None = None,
    admin: bool | None = None,
) -> None:
    """Bring the given services' schemas to ``revision``; then grant each service's role its schema.

    The admin schema (runtime administration) is migrated after them, by default when every
    service is, and granted to the services' roles (its writer: :data:`shared.roles.ADMIN_WRITER`).
    """
    if admin is None:
        admin = set(services) >= set(SERVICES)
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]
    engine = create_async_engine(database_url)
    try:
        for service in services:
            password = (passwords or {}).get(service)
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade, service, revision, service_roles, password)
        if admin:
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade_admin, revision, service_roles)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m shared.migrate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "services", nargs="*", help=f"any of {', '.join(SERVICES)}, admin (default: all, then admin)"
    )
    parser.add_argument("--database-url", default=os.environ.get("HAZARD_DATABASE_URL"))
    parser.add_argument("--revision", default="head")
    parser.add_argument(
        "--no-service-roles",
        action="store_true",
        help="do not create or grant the services' roles hazard_<service> (see shared.roles)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or HAZARD_DATABASE_URL) is required")
    unknown = sorted(set(args.services) - {*SERVICES, roles.ADMIN_SCHEMA})
    if unknown:
        parser.error(f"unknown service {', '.join(unknown)}; known: {', '.join(SERVICES)}")
    requested = tuple(args.services) or (*SERVICES, roles.ADMIN_SCHEMA)
    services = tuple(s for s in requested if s != roles.ADMIN_SCHEMA)
    asyncio.run(
        migrate(
            args.database_url,
            services,
            args.revision,
            service_roles=not args.no_service_roles,
            passwords=roles.passwords_from_env(),
            admin=roles.ADMIN_SCHEMA in requested,
        )
    )
    print(f"migrated: {', '.join(requested)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
