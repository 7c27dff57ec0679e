#!/bin/sh
# Entry point of the hazard-dispatch image: one image, five services and the migration job.
#   entrypoint.sh                       runs services.$SERVICE
#   entrypoint.sh intake|dispatch|...   runs that service
#   entrypoint.sh migrate [ARGS]        runs python -m shared.migrate ARGS (advisory-locked, safe in parallel)
#   entrypoint.sh ANY OTHER COMMAND     runs it (e.g. python -m services.reporting.rebuild)
set -eu

case "${1:-}" in
    "")
        : "${SERVICE:?set SERVICE to intake, dispatch, tracking, reporting or notifications, or pass one as the argument}"
        case "$SERVICE" in
            intake|dispatch|tracking|reporting|notifications) exec python -m "services.$SERVICE" ;;
            *) echo "entrypoint: unknown SERVICE '$SERVICE' (intake, dispatch, tracking, reporting, notifications)" >&2; exit 64 ;;
        esac
        ;;
    intake|dispatch|tracking|reporting|notifications)
        exec python -m "services.$1"
        ;;
    migrate)
        shift
        exec python -m shared.migrate "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
