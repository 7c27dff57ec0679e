"""The notifications tests' receivers (a real SMTP server and webhook receiver on loopback) and app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from shared.devstack.receivers import MailReceiver, WebhookReceiver
from tests.integration.notifications.notifications_helpers import AppFactory, app_factory


@pytest.fixture
def smtp() -> Iterator[MailReceiver]:
    receiver = MailReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def hooks() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
def notifications_app(db_url: str, kafka: Any, topics: dict[str, str], smtp: MailReceiver) -> AppFactory:
    return app_factory(db_url, kafka, topics, smtp_port=smtp.port)
