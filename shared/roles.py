"""Least privilege in PostgreSQL: one login role per service, able to use only its own schema.

The *owner* is the role that runs ``python -m shared.migrate``: it owns every service's schema and
tables. After migrating a service, the migration (this module, the one place these grants are written)
makes sure the service's role exists and grants it exactly:

- ``USAGE`` on its own schema, and nothing on any other service's schema;
- ``SELECT, INSERT, UPDATE, DELETE`` on the schema's tables and ``USAGE, SELECT`` on its sequences,
  now and, by default privileges, on the tables the owner creates there later (Alembic's version
  table: ``SELECT`` only);
- no ``CREATE`` anywhere: the service cannot change its schema (migrations do that, as the owner);
- ``CONNECT`` on the database, and ``TEMPORARY`` for reporting (its rollup's work tables), when the
  owner may grant them: for a database where ``PUBLIC`` lost them (deploy/postgres/create-owner.sh).

Roles are ``hazard_<service>``. A role that does not exist is created (the owner needs ``CREATEROLE``;
or a DBA creates the roles first and the owner only grants). A password given in
``HAZARD_<SERVICE>_DB_PASSWORD`` is set on every run, so rotating it is: change the secret, rerun the
migration job, restart the service. Without one, an existing role keeps its password and a new role
has none (enough where the server trusts local connections, as the local stack does).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

SERVICES: Final = ("intake", "dispatch", "tracking", "reporting", "notifications")
ROLE_PREFIX: Final = "hazard_"
TEMP_TABLE_SERVICES: Final = frozenset({"reporting"})
ADMIN_SCHEMA: Final = "admin"
"""Runtime administration's schema (its own migration chain, services/admin/migrations)."""
ADMIN_WRITER: Final = "reporting"
"""The one service that writes the admin schema (it hosts the admin API); every other service reads it."""
"""Services that create temporary tables (reporting's rollup refresh)."""


def service_role(service: str) -> str:
    """The database role a service connects as: ``hazard_<service>``."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; known: {', '.join(SERVICES)}")
    return ROLE_PREFIX + service


def password_env(service: str) -> str:
    """The environment variable the migration reads a service role's password from."""
    return f"HAZARD_{service.upper()}_DB_PASSWORD"


def passwords_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Service -> password, for the services whose ``HAZARD_<SERVICE>_DB_PASSWORD`` is set and not empty."""
    env = os.environ if environ is None else environ
    return {service: env[password_env(service)] for service in SERVICES if env.get(password_env(service))}


def role_url(url: str, service: str, password: str | None = None) -> str:
    """``url`` (the owner's) with the service's role as the user, and its password when given."""
    parsed = make_url(url).set(username=service_role(service), password=password)
    return parsed.render_as_string(hide_password=False)


def grant_statements(service: str) -> list[str]:
    """The GRANTs that let a service's role use its own schema's rows, and nothing more."""
    role = f'"{service_role(service)}"'
    schema = f'"{service}"'
    return [
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    ]


# Created when missing; a concurrent migration of another database on the same server may win the race.
_ENSURE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$
"""


def ensure_service_role(connection: Connection, service: str, password: str | None = None) -> None:
    """Create the service's role if missing, set its password if given, and grant it its schema."""
    role = service_role(service)
    connection.execute(text(_ENSURE_ROLE.format(role=role)))
    if password is not None:
        # format(%L) quotes the password on the server; ALTER ROLE takes no bind parameters.
        statement = connection.execute(
            text("SELECT format('ALTER ROLE %I PASSWORD %L', CAST(:role AS text), CAST(:password AS text))"),
            {"role": role, "password": password},
        ).scalar_one()
        connection.execute(text(statement))
    grant_schema(connection, service)


def grant_schema(connection: Connection, service: str) -> bool:
    """(Re)grant the service's role its schema's tables (after migrations, after a table swap).

    False, granting nothing, when the role does not exist (a database migrated without service roles).
    """
    exists = connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": service_role(service)}
    )
    if exists.first() is None:
        return False
    for statement in grant_statements(service):
        connection.execute(text(statement))
    # Alembic's version row is the migrations' business: the service may read it, not change it.
    versions = connection.execute(text("SELECT to_regclass(:t)"), {"t": f'"{service}".alembic_version'})
    if versions.scalar_one() is not None:
        connection.execute(
            text(
                f'REVOKE INSERT, UPDATE, DELETE ON "{service}".alembic_version FROM "{service_role(service)}"'
            )
        )
    database = ["CONNECT", *(["TEMPORARY"] if service in TEMP_TABLE_SERVICES else [])]
    connection.execute(
        text(_GRANT_DATABASE.format(role=service_role(service), privileges=", ".join(database)))
    )
    return True


# Only where the owner may grant them (the database's owner may; a mere schema owner may not).
_GRANT_DATABASE = """
DO $$
BEGIN
    IF has_database_privilege(current_database(), 'CONNECT WITH GRANT OPTION') THEN
        EXECUTE format('GRANT {privileges} ON DATABASE %I TO "{role}"', current_database());
    END IF;
END
$$
"""


def admin_grant_statements(service: str) -> list[str]:
    """The admin schema for one service's role: rows to its writer, ``SELECT`` only to the others."""
    role = f'"{service_role(service)}"'
    schema = f'"{ADMIN_SCHEMA}"'
    rights = "SELECT, INSERT, UPDATE, DELETE" if service == ADMIN_WRITER else "SELECT"
    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT {rights} ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {rights} ON TABLES TO {role}",
    ]
    if service == ADMIN_WRITER:
        statements += [
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        ]
    return statements


def grant_admin_schema(connection: Connection) -> list[str]:
    """Grant the admin schema to every existing service role; the services granted, in order."""
    connection.execute(text(f'REVOKE ALL ON SCHEMA "{ADMIN_SCHEMA}" FROM PUBLIC'))
    granted = []
    for service in SERVICES:
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": service_role(service)}
        )
        if exists.first() is None:
            continue
        for statement in admin_grant_statements(service):
            connection.execute(text(statement))
        versions = connection.execute(
            text("SELECT to_regclass(:t)"), {"t": f'"{ADMIN_SCHEMA}".alembic_version'}
        )
        if service == ADMIN_WRITER and versions.scalar_one() is not None:
            connection.execute(
                text(
                    f'REVOKE INSERT, UPDATE, DELETE ON "{ADMIN_SCHEMA}".alembic_version '
                    f'FROM "{service_role(service)}"'
                )
            )
        granted.append(service)
    return granted
