"""The sender's webhook target checks at send time, with a fake resolver (no network, no database)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from services.notifications import domain, repository
from services.notifications.sender import SenderLoop
from services.notifications.service import Secrets
from services.notifications.settings import DeliverySettings, SmtpSettings

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _claimed(url: str) -> repository.Claimed:
    sub = repository.Subscription(
        subscription_id=uuid.uuid4(),
        scope="department",
        scope_id="fire",
        channel="webhook",
        target=url,
        format="json",
        language="zh",
        secret_encrypted=None,
        description="",
        created_by="op-1",
        created_at=NOW,
        deleted_at=None,
    )
    notice = {"trigger": "dispatched", "hazard_id": str(uuid.uuid4()), "department_id": "fire", "facts": {}}
    return repository.Claimed(
        delivery_id=1,
        event_id=uuid.uuid4(),
        subscription=sub,
        notice=notice,
        channel="webhook",
        target=url,
        attempts=1,
        event_at=NOW,
        created_at=NOW,
    )


def _sender(resolve: Any) -> SenderLoop:
    return SenderLoop(
        sessions=None,  # type: ignore[arg-type]  # attempt() does not touch the database
        settings=DeliverySettings(),
        smtp=SmtpSettings(),
        secrets=Secrets(Fernet.generate_key().decode()),
        department_name=lambda department, language: department,
        resolve=resolve,
    )


async def test_a_host_that_does_not_resolve_now_is_retried_not_given_up() -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise OSError("Temporary failure in name resolution")

    outcome = await _sender(no_dns).attempt(_claimed("https://hooks.example.org/h"))
    assert outcome == domain.Outcome(
        ok=False, error="the host 'hooks.example.org' does not resolve: Temporary failure in name resolution"
    )


@pytest.mark.parametrize("address", ["10.0.0.7", "127.0.0.1", "169.254.169.254"])
async def test_a_host_that_now_resolves_to_a_private_address_is_refused_for_good(address: str) -> None:
    async def rebound(host: str, port: int) -> list[str]:
        return [address]

    outcome = await _sender(rebound).attempt(_claimed("https://hooks.example.org/h"))
    assert outcome.ok is False
    assert outcome.retryable is False
    assert outcome.error is not None
    assert address in outcome.error


async def test_a_result_finishing_while_a_claim_took_the_queue_is_kept_for_the_next_one() -> None:
    import asyncio

    release = asyncio.Event()

    class Slow(SenderLoop):
        async def attempt(self, item: repository.Claimed) -> domain.Outcome:
            await release.wait()
            return domain.Outcome(ok=True)

    sender = Slow(
        sessions=None,  # type: ignore[arg-type]  # the queue is not written here
        settings=DeliverySettings(),
        smtp=SmtpSettings(),
        secrets=Secrets(Fernet.generate_key().decode()),
        department_name=lambda department, language: department,
    )
    item = _claimed("https://hooks.example.org/h")
    sending = asyncio.create_task(sender._send_and_queue(item))
    await asyncio.sleep(0)
    taken, sender._results = sender._results, []  # what claim_and_start does meanwhile
    release.set()
    await sending
    assert taken == []
    assert [(queued.delivery_id, result.status) for queued, result in sender._results] == [
        (item.delivery_id, "sent")
    ]


async def test_a_send_finishing_while_the_claim_runs_wakes_the_next_claim_at_once() -> None:
    import asyncio

    claims = 0

    class Claims(SenderLoop):
        async def claim_and_start(self) -> int:
            nonlocal claims
            claims += 1
            if claims == 2:
                # Every send to the only busy target finishes while this claim runs (as _done does).
                self._wake.set()
                return 0
            if claims == 3:
                raise asyncio.CancelledError
            return 1

    sender = Claims(
        sessions=None,  # type: ignore[arg-type]  # claims are faked
        # The longest poll the settings allow: only the wake-up can bring the third claim in time.
        settings=DeliverySettings(poll_interval_s=60.0, gather_s=0.0),
        smtp=SmtpSettings(),
        secrets=Secrets(Fernet.generate_key().decode()),
        department_name=lambda department, language: department,
    )
    with pytest.raises(asyncio.CancelledError):
        # Half the poll interval: a third claim brought by the poll, not the wake-up, times out.
        await asyncio.wait_for(sender.run(), timeout=30)
    assert claims == 3


# ---------------------------------------------------------------- the circuit breaker per target


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _breaker(**settings: Any) -> tuple[SenderLoop, _Clock]:
    sender = SenderLoop(
        sessions=None,  # type: ignore[arg-type]  # the breaker's state only
        settings=DeliverySettings(breaker_failures=3, breaker_probe_s=5.0, drain_per_target=64, **settings),
        smtp=SmtpSettings(),
        secrets=Secrets(Fernet.generate_key().decode()),
        department_name=lambda department, language: department,
    )
    clock = _Clock()
    sender.monotonic = clock
    return sender, clock


DEAD = "http://hooks.example.org/dead"


def test_a_target_failing_in_a_row_gets_no_attempt_until_its_probe_is_due() -> None:
    sender, clock = _breaker()
    for _ in range(2):
        sender._note_answer(DEAD, "retrying", "ClientConnectorError: refused")
    assert sender._limits() == {}  # two failures: still closed
    sender._note_answer(DEAD, "retrying", "ClientConnectorError: refused")
    assert sender._limits() == {DEAD: 0}  # open: none of its deliveries is claimed
    clock.t += 4.9
    assert sender._limits() == {DEAD: 0}
    clock.t += 0.2
    assert sender._limits() == {DEAD: 1}  # one probe
    sender.probing.add(DEAD)  # what claim_and_start does with the probe it leased
    assert sender._limits() == {DEAD: 0}
    sender._note_answer(DEAD, "retrying", "ClientConnectorError: refused")  # the probe failed
    assert DEAD in sender.open
    assert DEAD not in sender.probing
    assert sender._limits() == {DEAD: 0}
    clock.t += 5.1
    assert sender._limits() == {DEAD: 1}


def test_a_success_between_failures_keeps_the_circuit_closed() -> None:
    sender, _ = _breaker()
    for status in ("retrying", "retrying", "sent", "retrying", "retrying"):
        sender._note_answer(DEAD, status, None if status == "sent" else "HTTP 503: busy")
    assert sender.open == {}
    assert sender._limits() == {}


def test_a_probe_answered_closes_the_circuit_releases_the_backlog_and_drains_wider() -> None:
    sender, clock = _breaker()
    for _ in range(3):
        sender._note_answer(DEAD, "retrying", "timeout")
    clock.t += 6
    sender.probing.add(DEAD)
    sender._note_answer(DEAD, "sent")
    assert sender.open == {}
    assert sender.probing == set()
    assert sender.failures == {}
    assert DEAD in sender._release  # its waiting retries are made due with the next claim
    assert sender._limits() == {DEAD: 64}
    sender._note_answer(DEAD, "retrying", "timeout")  # failing again while draining: back to the usual share
    assert sender._limits() == {}


def test_a_probe_failing_for_good_does_not_close_the_circuit() -> None:
    sender, clock = _breaker()
    for _ in range(3):
        sender._note_answer(DEAD, "retrying", "timeout")
    clock.t += 6
    sender.probing.add(DEAD)
    sender._note_answer(DEAD, "failed", "no answer within 10 s")  # its 24 h were over
    assert DEAD in sender.open
    assert DEAD not in sender.probing
    assert sender._limits() == {DEAD: 0}


def test_deliveries_held_past_the_retry_window_fail_visibly_with_the_targets_last_error() -> None:
    sender, clock = _breaker()
    for _ in range(3):
        sender._note_answer(DEAD, "retrying", "HTTP 503: down")
    assert sender._sweep_due() == [DEAD]
    assert sender._sweep_due() == []  # at most once per probe interval
    clock.t += 5.0
    assert sender._sweep_due() == [DEAD]
    held = _claimed(DEAD)
    sender._settle_expired([held])
    [(item, result)] = sender._results
    assert item is held
    assert result.status == "failed"
    assert result.next_attempt_at is None
    assert result.error is not None
    assert result.error.startswith("circuit open, not attempted")
    assert "HTTP 503: down" in result.error
    sender._results.clear()
    tried = dataclasses.replace(_claimed(DEAD), attempts=4, last_error="HTTP 500: oops")
    sender._settle_expired([tried])
    [(_, result)] = sender._results
    assert (result.status, result.error) == ("failed", "HTTP 500: oops")  # its own last failure


class _HeldRows:
    """The two repository reads of the expiry look: the oldest waiting delivery, and the expired ones."""

    def __init__(self, oldest: datetime | None) -> None:
        self.oldest = oldest
        self.oldest_reads: list[list[str]] = []
        self.expiry_looks: list[tuple[list[str], datetime]] = []

    async def oldest_held(self, targets: list[str]) -> dict[str, datetime]:
        self.oldest_reads.append(list(targets))
        return {} if self.oldest is None else dict.fromkeys(targets, self.oldest)

    async def claim_expired(self, targets: list[str], *, created_before: datetime, **_: Any) -> list[Any]:
        self.expiry_looks.append((list(targets), created_before))
        return []


async def test_an_open_target_is_looked_over_for_expired_deliveries_only_once_its_oldest_can_be() -> None:
    sender, clock = _breaker(retry_for_s=3600.0)
    for _ in range(3):
        sender._note_answer(DEAD, "retrying", "ClientConnectorError: refused")
    oldest = NOW - timedelta(minutes=10)
    repo = _HeldRows(oldest)
    # The circuit just opened: its oldest waiting delivery is read (few rows then), none can have expired.
    assert await sender._claim_expired(repo, now=NOW, limit=100) == []  # type: ignore[arg-type]
    assert repo.oldest_reads == [[DEAD]]
    # Every probe interval of the next 50 minutes: no read of its held rows at all.
    for minute in range(1, 50):
        clock.t += 60
        await sender._claim_expired(repo, now=NOW + timedelta(minutes=minute), limit=100)  # type: ignore[arg-type]
    assert repo.oldest_reads == [[DEAD]]
    assert repo.expiry_looks == []
    # Its oldest is past the window: it is looked over, and the oldest left read again the next time.
    clock.t += 60
    later = NOW + timedelta(minutes=51)
    await sender._claim_expired(repo, now=later, limit=100)  # type: ignore[arg-type]
    assert repo.expiry_looks == [([DEAD], later - timedelta(hours=1))]
    clock.t += 5
    await sender._claim_expired(repo, now=later + timedelta(seconds=5), limit=100)  # type: ignore[arg-type]
    assert repo.oldest_reads == [[DEAD], [DEAD]]
    assert len(repo.expiry_looks) == 2  # that oldest (unchanged here) is still past it


async def test_a_target_with_nothing_waiting_when_its_circuit_opens_is_looked_over_a_window_later() -> None:
    sender, clock = _breaker(retry_for_s=3600.0)
    for _ in range(3):
        sender._note_answer(DEAD, "retrying", "ClientConnectorError: refused")
    repo = _HeldRows(None)
    await sender._claim_expired(repo, now=NOW, limit=100)  # type: ignore[arg-type]
    clock.t += 3599
    await sender._claim_expired(repo, now=NOW + timedelta(seconds=3599), limit=100)  # type: ignore[arg-type]
    assert repo.expiry_looks == []
    clock.t += 5
    await sender._claim_expired(repo, now=NOW + timedelta(seconds=3604), limit=100)  # type: ignore[arg-type]
    assert [targets for targets, _ in repo.expiry_looks] == [[DEAD]]


def test_a_closed_circuit_forgets_the_targets_oldest_waiting_delivery() -> None:
    sender, clock = _breaker()
    for _ in range(3):
        sender._note_answer(DEAD, "retrying", "timeout")
    sender._oldest_held[DEAD] = NOW
    clock.t += 6
    sender.probing.add(DEAD)
    sender._note_answer(DEAD, "sent")
    assert DEAD not in sender._oldest_held


def test_a_notice_failed_by_the_open_circuit_shows_the_targets_last_failure_on_the_timeline() -> None:
    assert domain.error_kind("circuit open, not attempted; last error: HTTP 503: down") == "HTTP 503"
    assert domain.error_kind("circuit open, not attempted; last error: no answer within 10 s") == "timeout"
    assert domain.error_kind("circuit open, not attempted; last error: ?") == "error"
    assert domain.error_kind("circuit open, not attempted; last error: ") == "circuit open"


def test_a_sealed_secret_opens_to_itself_and_a_new_seal_of_another_secret_to_the_other() -> None:
    # Opened secrets are kept (keyed by the sealed bytes): each sealed value still opens to its own
    # secret, and a wrong key still fails.
    secrets = Secrets(Fernet.generate_key().decode())
    first, second = secrets.seal("first-secret"), secrets.seal("second-secret")
    assert [secrets.open(first), secrets.open(second), secrets.open(first)] == [
        b"first-secret",
        b"second-secret",
        b"first-secret",
    ]
    with pytest.raises(InvalidToken):
        Secrets(Fernet.generate_key().decode()).open(first)
