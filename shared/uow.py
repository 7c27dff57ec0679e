"""The unit of work: the one thing a use case receives, from a consumer, a timer or an HTTP route.

A unit of work is one database transaction seen from the use case's side:

* ``repo``: the service's repository, bound to the transaction (SQLAlchemy Core statements
  built from the service's ``tables.py``);
* ``now``: the database's clock, read once at the start (every deadline verdict is taken on it,
  so replicas whose hosts disagree on the time still agree);
* ``publish(*events)``: stage events in the outbox, sent only if the transaction commits (the
  commit wakes the relay);
* ``after_commit(action)``: run ``action`` once committed, never on rollback (the one rule for
  metrics: a retried batch never counts twice).

A consumer's unit of work (:class:`shared.consumer.BatchContext`) adds the way to refuse one
event (``reject``) and to log each event's ids while it is applied (``each``).

Use cases are plain ``async def verb_noun(uow, ...)`` functions typed against the
:class:`UnitOfWork` protocol, so tests hand them an in-memory fake
(``tests/support/fake_uow.py``) and run in milliseconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request

from shared.db import after_commit, database_now
from shared.events import AnyEvent
from shared.outbox import Outbox

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class UnitOfWork(Protocol[R_co]):
    """What a use case may use: its repository, the database's now, the outbox, after-commit actions."""

    @property
    def now(self) -> datetime: ...

    @property
    def repo(self) -> R_co: ...

    async def publish(self, *events: AnyEvent) -> None: ...

    def after_commit(self, action: Callable[[], None]) -> None: ...


@dataclass(kw_only=True)
class SqlUnitOfWork(Generic[R]):
    """A unit of work on one open PostgreSQL transaction."""

    session: AsyncSession
    outbox: Outbox
    now: datetime
    repo: R

    async def publish(self, *events: AnyEvent) -> None:
        """Stage events for publication in this transaction (the commit wakes the relay)."""
        await self.outbox.add(self.session, *events)

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this transaction commits; never if it rolls back."""
        after_commit(self.session, action)


class UnitOfWorkFactory(Generic[R]):
    """Opens units of work: ``async with work() as uow:`` is one transaction, committed on exit.

    An exception inside the block rolls the transaction back and propagates (a domain refusal
    reaches the edge, which answers in the API's error shape).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        repository: Callable[[AsyncSession], R],
    ) -> None:
        self.sessions = sessions
        self.outbox = outbox
        self.repository = repository

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[SqlUnitOfWork[R]]:
        async with self.sessions() as session, session.begin():
            yield SqlUnitOfWork(
                session=session,
                outbox=self.outbox,
                now=await database_now(session),
                repo=self.repository(session),
            )

    def bind(self, session: AsyncSession, *, now: datetime) -> SqlUnitOfWork[R]:
        """A unit of work on a transaction the caller already holds (a consumer's batch, a timer's sweep)."""
        return SqlUnitOfWork(session=session, outbox=self.outbox, now=now, repo=self.repository(session))


def request_work(request: Request) -> UnitOfWorkFactory[Any]:
    """The unit-of-work factory of the service answering ``request`` (a route's typed dependency).

    A service names it with its repository's type: ``Work = Annotated[UnitOfWorkFactory[
    DispatchRepository], Depends(request_work)]``.
    """
    work: UnitOfWorkFactory[Any] = request.app.state.runtime.work
    return work


def no_repository(session: AsyncSession) -> Any:
    """For a unit of work whose use cases reach no repository (the session is still there)."""
    return None
