#!/bin/sh
# Runs once, on the first start of an empty data directory (the postgres image runs
# /docker-entrypoint-initdb.d/* as the superuser). Creates the role that owns the hazard database and
# runs the migrations: no superuser; CREATEROLE so the migrations can create the services' roles, which
# shared/roles.py (the one place the services' grants are written) grants their own schema only.
# Nobody else may connect: CONNECT and TEMPORARY are taken from PUBLIC and granted per role.
set -eu

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner="${HAZARD_OWNER:-hazard}" -v password="$HAZARD_OWNER_PASSWORD" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"owner" LOGIN NOSUPERUSER CREATEROLE NOCREATEDB PASSWORD :'password';
ALTER DATABASE :"db" OWNER TO :"owner";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
