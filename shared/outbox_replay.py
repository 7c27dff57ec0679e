"""Publish retained outbox rows again: ``python -m shared.outbox_replay --since T``.

Every service keeps the events it published in its outbox for ``<SERVICE>__OUTBOX__RETENTION_DAYS``
(7 by default). This command sends again every published row written at or after ``--since`` (and
before ``--until``; "written" is when the writing transaction started), each hazard's events in the
order they were first published (merged across the services' outboxes), for example to refill a
broker that lost its data. Consumers skip the events they had applied (their
inbox), so a replay is safe to repeat; it waits for each service's relay to finish its batch and
holds them off while it runs.

    python -m shared.outbox_replay --database-url URL --bootstrap-servers HOST:9092 \\
        --since 2026-12-01T08:00:00+08:00 [--until ...] [intake dispatch ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from shared import roles
from shared.db import create_engine, create_session_factory, outbox_table
from shared.kafka import BrokerSender, create_broker
from shared.outbox import replay_published
from shared.settings import DatabaseSettings, KafkaSettings

# Every service has an outbox (notifications': its dead letters), all in one list.
SERVICES = roles.SERVICES
# Before anything a retention period can hold: "everything retained".
EVERYTHING = datetime(1970, 1, 1, tzinfo=UTC)


def outbox_tables(services: Sequence[str]) -> list[sa.Table]:
    """The outbox table of each service's schema."""
    return [outbox_table(sa.MetaData(schema=name)) for name in services]


async def replay(
    *,
    database_url: str,
    bootstrap_servers: str,
    since: datetime,
    until: datetime | None = None,
    services: Sequence[str] = SERVICES,
    idempotent_producer: bool = True,
) -> int:
    """Send again what the services' outboxes published, written since ``since``; returns how many rows."""
    engine = create_engine(DatabaseSettings(url=database_url), application_name="hazard-outbox-replay")
    broker = create_broker(
        KafkaSettings(bootstrap_servers=bootstrap_servers, idempotent_producer=idempotent_producer),
        service="outbox-replay",
    )
    await broker.start()
    try:
        return await replay_published(
            create_session_factory(engine),
            BrokerSender(broker, service="outbox-replay"),
            outbox_tables(services),
            since,
            until=until,
        )
    finally:
        await broker.stop()
        await engine.dispose()


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (add Z or +08:00)")
    return moment


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.outbox_replay", description=__doc__.splitlines()[0]
    )
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(SERVICES)} (default: all)")
    parser.add_argument("--database-url", default=os.environ.get("HAZARD_DATABASE_URL"))
    parser.add_argument("--bootstrap-servers", default=os.environ.get("HAZARD_BOOTSTRAP_SERVERS"))
    parser.add_argument(
        "--since", type=_moment, help="ISO 8601 with a zone; published rows written at or after it"
    )
    parser.add_argument("--all", action="store_true", help="every retained row (instead of --since)")
    parser.add_argument("--until", type=_moment, help="rows written before it (default: no bound)")
    parser.add_argument(
        "--no-idempotent-producer", action="store_true", help="for a broker without it (the local Tansu)"
    )
    args = parser.parse_args(argv)
    if not args.database_url or not args.bootstrap_servers:
        parser.error("--database-url and --bootstrap-servers are required (or HAZARD_DATABASE_URL, ...)")
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown services {unknown}: use any of {', '.join(SERVICES)}")
    if (args.since is None) == (not args.all):
        parser.error("give --since T or --all")
    sent = asyncio.run(
        replay(
            database_url=args.database_url,
            bootstrap_servers=args.bootstrap_servers,
            since=EVERYTHING if args.all else args.since,
            until=args.until,
            services=args.services or SERVICES,
            idempotent_producer=not args.no_idempotent_producer,
        )
    )
    print(f"outbox replay: {sent} events sent again", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
