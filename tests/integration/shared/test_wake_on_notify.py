"""A loop waiting in one process is woken by another process's commit (LISTEN/NOTIFY, #16)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from shared.db import create_engine, listening_connection
from shared.idle import Wakeup, wake_on_notify
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

CHANNEL = "hazard_test_wake"
KEY = "test.wake_on_notify"


async def test_a_committed_notify_wakes_the_loop_and_a_rolled_back_one_does_not(db_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    notify = sa.text(f"SELECT pg_notify('{CHANNEL}', '')")
    try:
        with Wakeup(KEY) as wakeup:
            listener = asyncio.create_task(
                wake_on_notify(lambda: listening_connection(engine, "hazard-test"), CHANNEL, KEY, retry_s=0.1)
            )
            try:
                # Once listening it wakes the loop once: what was committed before is looked for too.
                assert await wakeup.wait(30), "listening wakes the loop once"
                wakeup.clear()

                async with engine.connect() as conn:
                    await conn.execute(notify)
                    await conn.rollback()
                assert not await wakeup.wait(0.5), "a rolled-back transaction notifies nobody"

                async with engine.begin() as conn:
                    await conn.execute(notify)
                    await conn.execute(notify)  # one wake per transaction, whatever the calls
                assert await wakeup.wait(30), "a committed notify wakes the loop"
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
    finally:
        await engine.dispose()


async def test_a_lost_listening_connection_is_opened_again(db_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    opened: list[object] = []

    async def connect() -> object:
        conn = await listening_connection(engine, "hazard-test")
        opened.append(conn)
        return conn

    try:
        with Wakeup(KEY) as wakeup:
            listener = asyncio.create_task(wake_on_notify(connect, CHANNEL, KEY, retry_s=0.1))
            try:
                assert await wakeup.wait(30)
                wakeup.clear()
                async with engine.begin() as conn:  # the server ends the listener's session
                    await conn.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'hazard-test'"
                        )
                    )
                assert await wakeup.wait(30), "listening again wakes the loop once more"
                assert len(opened) == 2
                wakeup.clear()
                async with engine.begin() as conn:
                    await conn.execute(sa.text(f"SELECT pg_notify('{CHANNEL}', '')"))
                assert await wakeup.wait(30), "the new connection hears the next commit"
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
    finally:
        await engine.dispose()
