"""An in-memory unit of work for use-case tests that run in milliseconds (no database, no broker).

A use case typed against :class:`shared.uow.UnitOfWork` gets a :class:`FakeUnitOfWork` whose
``repo`` is an in-memory fake of the service's repository (the service's tests define it,
keeping the real repository's method names and answers). ``published`` holds what the use
case staged in the outbox; after-commit actions run only when the block commits, and a
refusal (an exception) drops what was published, as a rollback would.

    work = FakeWork(FakeDispatchRepository(), now=T0)
    async with work() as uow:
        await service.acknowledge_dispatch(uow, dispatch_id, principal=fire)
    assert work.types() == ["hazard.acknowledged"]

The fake repository's own state is not rolled back: tests that need a refused call to leave
no trace check ``work.published`` and the repository's answers, as the real one would give.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from shared.events import AnyEvent

R = TypeVar("R")


@dataclass(kw_only=True)
class FakeUnitOfWork(Generic[R]):
    """One open fake transaction."""

    repo: R
    now: datetime
    staged: list[AnyEvent] = field(default_factory=list)
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    rejected: list[tuple[AnyEvent, str]] = field(default_factory=list)

    async def publish(self, *events: AnyEvent) -> None:
        self.staged.extend(events)

    def after_commit(self, action: Callable[[], None]) -> None:
        self.on_commit.append(action)

    async def reject(self, event: AnyEvent, reason: str) -> None:
        """A consumer's refusal of one event (what the real batch context dead-letters)."""
        self.rejected.append((event, reason))

    def each(self, events: Any) -> Any:
        return iter(events)


class FakeWork(Generic[R]):
    """Opens fake units of work on one in-memory repository; ``now`` moves with :meth:`advance`."""

    def __init__(self, repo: R, *, now: datetime) -> None:
        self.repo = repo
        self.now = now
        self.published: list[AnyEvent] = []
        self.rejected: list[tuple[AnyEvent, str]] = []
        self.commits = 0
        self.rollbacks = 0

    def advance(self, by: timedelta) -> None:
        self.now += by

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[FakeUnitOfWork[R]]:
        uow = FakeUnitOfWork(repo=self.repo, now=self.now)
        try:
            yield uow
        except BaseException:
            self.rollbacks += 1
            raise
        self.commits += 1
        self.published.extend(uow.staged)
        self.rejected.extend(uow.rejected)
        for action in uow.on_commit:
            action()

    def types(self) -> list[str]:
        """The types of the events published so far, in order."""
        return [event.TYPE for event in self.published]
