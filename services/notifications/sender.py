"""The sender: claims due deliveries, sends them by webhook or e-mail, records each result.

Deliveries are leased (``FOR UPDATE SKIP LOCKED``, then a lease time) and sent outside any
transaction, each in its own task: a receiver that is slow or down holds only its own share
(``per_target``) of the sender's capacity (``max_in_flight``), never the others'. Results are
recorded together with the next claim (one transaction); a failure is retried with exponential
backoff and jitter until ``retry_for_s``, then the delivery is ``failed``. When a target that
failed answers again, its waiting retries are made due at once (the backlog drains then, not
when each backoff runs out).

A circuit breaker per target: after ``breaker_failures`` failed attempts in a row, a target's
deliveries are no longer claimed (they wait, due, at no cost to the others); one probe every
``breaker_probe_s`` finds its return, then its backlog drains with ``drain_per_target`` in flight.
While open, its deliveries older than ``retry_for_s`` are recorded ``failed`` without an attempt.

Webhooks go through one aiohttp session (keep-alive connections per host, about 0.1 ms of CPU
per POST; httpx took 1.5 ms, which capped the sender near 310 sends/s on two cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate

import aiohttp
import aiosmtplib
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import domain, metrics, repository
from services.notifications.service import (
    Resolver,
    Secrets,
    TargetUnresolved,
    check_webhook_target,
    resolve_host,
)
from services.notifications.settings import DeliverySettings, SmtpSettings
from shared.idle import IdleBackoff, Wakeup
from shared.outbox import Outbox

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SIGNATURE_HEADER = "X-Hazard-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def idempotency_key(claimed: repository.Claimed) -> str:
    """The same for every attempt of one notification to one subscription."""
    return f"{claimed.event_id}:{claimed.subscription.subscription_id}"


class SenderLoop:
    """Sends due deliveries with bounded concurrency per target; safe to run in every replica."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        settings: DeliverySettings,
        smtp: SmtpSettings,
        secrets: Secrets,
        department_name: Callable[[str, domain.Language], str],
        clock: Clock = _utcnow,
        rand: random.Random | None = None,
        resolve: Resolver = resolve_host,
        outbox: Outbox | None = None,
    ) -> None:
        self.sessions = sessions
        # Where each delivery's outcome (sent, or failed for good) is published as hazard.notified.
        self.outbox = outbox
        self.settings = settings
        self.smtp = smtp
        self.secrets = secrets
        self.department_name = department_name
        self.clock = clock
        self.rand = rand or random.Random()
        self.resolve = resolve
        self.in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._client: aiohttp.ClientSession | None = None
        # Results of finished sends, recorded together with the next claim (one transaction).
        self._results: list[tuple[repository.Claimed, repository.Attempted]] = []
        # Targets whose last attempt here succeeded; a success of one not in it releases its
        # waiting retries (with the next claim), so a receiver back from an outage drains at once.
        self._answering: set[str] = set()
        self._release: set[str] = set()
        # The circuit breaker per target (this process's view; each replica keeps its own).
        self.failures: dict[str, int] = {}  # failed attempts in a row
        self.open: dict[str, float] = {}  # open circuits: target -> when to probe (monotonic)
        self.probing: set[str] = set()  # open targets whose probe is in flight
        self.draining: set[str] = set()  # closed again, backlog draining with drain_per_target
        self._last_error: dict[str, str] = {}
        self._sweep_at: dict[str, float] = {}  # open targets: next look for expired deliveries
        # Open targets: when their oldest waiting delivery was created, as last read (absent: not
        # known). A target's deliveries are only looked over for the expired once one can be.
        self._oldest_held: dict[str, datetime] = {}
        self.monotonic: Callable[[], float] = time.monotonic

    async def run(self) -> None:
        """Claim and send until cancelled; in-flight sends get ``timeout_s`` to finish."""
        poll = self.settings.poll_interval_s
        backoff = IdleBackoff(poll, max(poll, self.settings.idle_poll_max_s))
        # New deliveries of this process (committed by the consumer or the reminders) end an idle
        # wait too, and are claimed poll_interval_s later: the ordinary poll's pace, however long
        # the idle wait had grown.
        wakeup = Wakeup(repository.DELIVERIES_WAKE)
        wakeup.__enter__()
        try:
            while True:
                # Cleared before the claim, not after it: a send that finishes while the claim
                # runs wakes the wait below at once (cleared after, the loop slept a whole poll
                # interval whenever every send to the only busy target finished meanwhile: a
                # receiver back from an outage drained at 16 per 0.1 s).
                self._wake.clear()
                wakeup.clear()
                try:
                    claimed = await self.claim_and_start()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("delivery claim failed, will retry: %s", exc)
                    claimed = 0
                if claimed == 0:
                    # Idle, the poll slows down (#20); new deliveries of this process and finished
                    # sends wake it at once.
                    await self._idle_wait(wakeup.event, backoff.next_wait(worked=False))
                    if self._wake.is_set():
                        backoff.reset()  # a send finished: claim again at once
                    elif wakeup.event.is_set():
                        backoff.reset()
                        await asyncio.sleep(poll)
                    # Let a few more sends finish: their results and the next claim share one transaction.
                    await asyncio.sleep(self.settings.gather_s)
                else:
                    backoff.reset()
        finally:
            wakeup.__exit__()
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=self.settings.timeout_s)
            with contextlib.suppress(Exception):
                await self._flush_results()
            await self.close()

    async def _idle_wait(self, new_deliveries: asyncio.Event, timeout_s: float) -> None:
        """Wait until a send finishes, new deliveries are committed here, or ``timeout_s`` passed."""
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(new_deliveries.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    @property
    def client(self) -> aiohttp.ClientSession:
        """The HTTP client of the webhooks (made on first use, inside the running loop)."""
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession(
                # The per-target limit is ours (claims); the connector keeps connections alive.
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=60),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
            )
        return self._client

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def claim_and_start(self) -> int:
        """Lease what there is room for and start sending each; returns how many were leased."""
        room = self.settings.max_in_flight - len(self._tasks)
        results, self._results = self._results, []
        release, self._release = self._release, set()
        if room <= 0 and not results and not release:
            return 0
        try:
            async with self.sessions() as session:
                async with session.begin():
                    await self._record(session, results)
                    repo = repository.NotificationsRepository(session)
                    if release:
                        released = await repo.release_held(sorted(release), now=self.clock())
                        if released:
                            log.info("%d held deliveries due again: %s answers", released, sorted(release))
                    expired: list[repository.Claimed] = []
                    if room <= 0:
                        claimed = []
                    else:
                        now = self.clock()
                        claimed = await repo.claim_deliveries(
                            now=now,
                            limit=room,
                            per_target=self.settings.per_target,
                            in_flight=self.in_flight,
                            lease_s=self.settings.lease_s,
                            limits=self._limits(),
                        )
                        expired = await self._claim_expired(repo, now=now, limit=room - len(claimed))
                self._observe(session)
        except BaseException:
            self._results[:0] = results  # not recorded: with the next claim
            self._release |= release
            raise
        self._settle_expired(expired)
        if self.draining and room > 0 and len(claimed) < room:
            # A draining target that got less than its room had no more due: its backlog is done.
            taken: dict[str, int] = {}
            for item in claimed:
                taken[item.target] = taken.get(item.target, 0) + 1
            drain = max(self.settings.per_target, self.settings.drain_per_target)
            for target in list(self.draining):
                if self.in_flight.get(target, 0) + taken.get(target, 0) < drain:
                    self.draining.discard(target)
        for item in claimed:
            if item.target in self.open:
                self.probing.add(item.target)
            self.in_flight[item.target] = self.in_flight.get(item.target, 0) + 1
            task = asyncio.create_task(self._send_and_queue(item), name=f"deliver-{item.delivery_id}")
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, target=item.target))
        return len(claimed)

    def _done(self, task: asyncio.Task[None], *, target: str) -> None:
        self._tasks.discard(task)
        left = self.in_flight.get(target, 1) - 1
        if left > 0:
            self.in_flight[target] = left
        else:
            self.in_flight.pop(target, None)
        self._wake.set()

    async def deliver(self, item: repository.Claimed) -> None:
        """Send one leased delivery and record the result (in its own transaction)."""
        result = await self.send(item)
        async with self.sessions() as session:
            async with session.begin():
                await self._record(session, [(item, result)])
            self._observe(session)
        self._note_answer(item.target, result.status, result.error)

    async def _send_and_queue(self, item: repository.Claimed) -> None:
        result = await self.send(item)
        # Only now look up the list: the claim may have taken the previous one meanwhile.
        self._results.append((item, result))
        self._note_answer(item.target, result.status, result.error)

    def _limits(self) -> dict[str, int]:
        """Per-target limits other than ``per_target``: open circuits (0, or 1 to probe), draining."""
        limits = dict.fromkeys(self.draining, max(self.settings.per_target, self.settings.drain_per_target))
        now = self.monotonic()
        for target, probe_at in self.open.items():
            limits[target] = 1 if target not in self.probing and now >= probe_at else 0
        return limits

    async def _claim_expired(
        self, repo: repository.NotificationsRepository, *, now: datetime, limit: int
    ) -> list[repository.Claimed]:
        """Lease the deliveries of open targets held past the retry window, if one of them can be.

        The look itself reads every held row of the target (56 ms for 45,000); it is made only for
        targets whose oldest waiting delivery, read once when their circuit opened (few rows then),
        is older than the window: a 10-minute outage looks once, not every probe interval.
        """
        sweep = self._sweep_due()
        if not sweep or limit <= 0:
            return []
        unknown = [t for t in sweep if t not in self._oldest_held]
        if unknown:
            found = await repo.oldest_held(unknown)
            # None waiting: any delivery added later is created from now on.
            for target in unknown:
                self._oldest_held[target] = found.get(target, now)
        created_before = now - timedelta(seconds=self.settings.retry_for_s)
        ready = [t for t in sweep if self._oldest_held[t] <= created_before]
        if not ready:
            return []
        for target in ready:  # some expire now: the oldest left is read again at the next look
            del self._oldest_held[target]
        return await repo.claim_expired(
            ready, created_before=created_before, now=now, limit=limit, lease_s=self.settings.lease_s
        )

    def _sweep_due(self) -> list[str]:
        """Open targets due a look for deliveries past the retry window (at most every probe interval)."""
        now = self.monotonic()
        due = [t for t in self.open if self._sweep_at.get(t, 0.0) <= now]
        for target in due:
            self._sweep_at[target] = now + self.settings.breaker_probe_s
        return due

    def _settle_expired(self, expired: list[repository.Claimed]) -> None:
        """Deliveries held by an open circuit past the retry window: failed, with the target's last error."""
        if not expired:
            return
        now = self.clock()
        for item in expired:
            # One tried before the circuit opened keeps its own last error; the others say why not tried.
            error = (
                item.last_error
                if item.attempts > 0 and item.last_error
                else f"circuit open, not attempted; last error: {self._last_error.get(item.target, '?')}"
            )
            self._results.append(
                (
                    item,
                    repository.Attempted(
                        delivery_id=item.delivery_id,
                        status="failed",
                        next_attempt_at=None,
                        error=error[:500],
                        now=now,
                    ),
                )
            )
        self._wake.set()

    def _note_answer(self, target: str, status: str, error: str | None = None) -> None:
        if status == "sent":
            self.failures.pop(target, None)
            if target in self.open:
                del self.open[target]
                self._sweep_at.pop(target, None)
                self._oldest_held.pop(target, None)
                self.draining.add(target)
                log.info("circuit of %s closed: it answers again", target)
            self.probing.discard(target)
            if target not in self._answering:
                self._answering.add(target)
                self._release.add(target)
            return
        if error is not None:
            self._last_error[target] = error
        if status == "retrying":
            self._answering.discard(target)
            self.draining.discard(target)
            self.failures[target] = self.failures.get(target, 0) + 1
            if target not in self.open and self.failures[target] >= self.settings.breaker_failures:
                log.warning(
                    "circuit of %s open after %d failures in a row: its deliveries wait, probed every %g s",
                    target,
                    self.failures[target],
                    self.settings.breaker_probe_s,
                )
                self.open[target] = self.monotonic() + self.settings.breaker_probe_s
        if target in self.probing:  # the probe failed (retrying, or failed for good): probe again later
            self.probing.discard(target)
            self.open[target] = self.monotonic() + self.settings.breaker_probe_s

    async def _flush_results(self) -> None:
        results, self._results = self._results, []
        if results:
            async with self.sessions() as session:
                async with session.begin():
                    await self._record(session, results)
                self._observe(session)

    async def send(self, item: repository.Claimed) -> repository.Attempted:
        """Send one leased delivery; returns what is to be recorded."""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                outcome = await self.attempt(item)
        except TimeoutError:
            outcome = domain.Outcome(ok=False, error=f"no answer within {self.settings.timeout_s:g} s")
        except Exception as exc:
            outcome = domain.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        now = self.clock()
        status, next_at = domain.after_attempt(
            outcome,
            attempts=item.attempts,
            created_at=item.created_at,
            now=now,
            base_s=self.settings.backoff_base_s,
            max_s=self.settings.backoff_max_s,
            retry_for_s=self.settings.retry_for_s,
            rand=self.rand,
        )
        return repository.Attempted(
            delivery_id=item.delivery_id, status=status, next_attempt_at=next_at, error=outcome.error, now=now
        )

    async def _record(
        self, session: AsyncSession, results: list[tuple[repository.Claimed, repository.Attempted]]
    ) -> None:
        """Record results in the session's transaction; metrics and logs once it commits."""
        if not results:
            return
        try:
            async with session.begin_nested():
                changed = await repository.NotificationsRepository(session).record_attempts(
                    [r for _, r in results]
                )
                if self.outbox is not None:
                    # Only what this transaction settled: a delivery recorded once is published once.
                    await self.outbox.add(
                        session,
                        *(
                            domain.notified_event(
                                notice=item.notice,
                                source_id=item.event_id,
                                subscription_id=item.subscription.subscription_id,
                                channel=item.channel,
                                target=item.target,
                                status=result.status,
                                attempts=item.attempts,
                                error=result.error,
                                at=result.now,
                            )
                            for item, result in results
                            if result.delivery_id in changed and result.status in ("sent", "failed")
                        ),
                    )
        except Exception as exc:
            # The leases run out and the deliveries are tried again: at least once, the receiver
            # deduplicates on the idempotency key.
            log.warning("could not record %d delivery results: %s", len(results), exc)
            return
        session.sync_session.info.setdefault("recorded", []).extend(results)

    @staticmethod
    def _observe(session: AsyncSession) -> None:
        """Metrics and logs of the results the (committed) session recorded."""
        results: list[tuple[repository.Claimed, repository.Attempted]] = session.sync_session.info.pop(
            "recorded", []
        )
        for item, result in results:
            metrics.DELIVERY_ATTEMPTS.labels(item.channel, result.status).inc()
            if result.status == "sent":
                metrics.LATENCY.labels(item.channel).observe(
                    max(0.0, (result.now - item.event_at).total_seconds())
                )
            elif result.status == "failed":
                log.error(
                    "delivery %d to %s failed for good after %d attempts: %s",
                    item.delivery_id,
                    item.channel,
                    item.attempts,
                    result.error,
                    extra={"hazard_id": item.notice.get("hazard_id"), "event_id": str(item.event_id)},
                )

    async def attempt(self, item: repository.Claimed) -> domain.Outcome:
        """One attempt to deliver."""
        sub = item.subscription
        language: domain.Language = "en" if sub.language == "en" else "zh"
        fmt: domain.Format = sub.format if sub.format in ("wecom", "dingtalk") else "json"  # type: ignore[assignment]
        message = domain.render(
            item.notice,
            language=language,
            department_name=self.department_name(str(item.notice["department_id"]), language),
            subscription_id=sub.subscription_id,
            fmt=fmt,
        )
        if item.channel == "webhook":
            return await self._webhook(item, message)
        return await self._email(item, message)

    async def _webhook(self, item: repository.Claimed, message: domain.Message) -> domain.Outcome:
        try:
            # Again at send time: a name may resolve elsewhere now than when it was subscribed.
            await check_webhook_target(
                item.target, allow_private=self.settings.allow_private_targets, resolve=self.resolve
            )
        except TargetUnresolved as exc:
            return domain.Outcome(ok=False, error=exc.problem)  # DNS may answer again later
        except domain.InvalidSubscription as exc:
            return domain.Outcome(ok=False, error=exc.problem, retryable=False)
        body = message.body_bytes()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "hazard-dispatch-notifications/1",
            IDEMPOTENCY_HEADER: idempotency_key(item),
            "X-Hazard-Event-Id": str(item.event_id),
            "X-Hazard-Subscription-Id": str(item.subscription.subscription_id),
            "X-Hazard-Attempt": str(item.attempts),
        }
        if item.subscription.secret_encrypted is not None:
            headers[SIGNATURE_HEADER] = sign(self.secrets.open(item.subscription.secret_encrypted), body)
        async with self.client.post(
            item.target, data=body, headers=headers, allow_redirects=False
        ) as response:
            status = response.status
            if 200 <= status < 300:
                answer = b""
                if response.content_length is not None and response.content_length <= 65_536:
                    await response.read()  # read to the end: the connection is kept for the next
            else:
                answer = await response.content.read(200)
        if 200 <= status < 300:
            return domain.Outcome(ok=True)
        error = f"HTTP {status}: {answer.decode('utf-8', 'replace')}"
        # A receiver that refuses the request itself will refuse it again; overload and outages pass.
        permanent = 400 <= status < 500 and status not in (408, 409, 425, 429)
        return domain.Outcome(ok=False, error=error, retryable=not permanent)

    async def _email(self, item: repository.Claimed, message: domain.Message) -> domain.Outcome:
        mail = EmailMessage()
        mail["From"] = self.smtp.sender
        mail["To"] = item.target
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = f"<{item.event_id}.{item.subscription.subscription_id}@hazard-dispatch>"
        mail["X-Hazard-Idempotency-Key"] = idempotency_key(item)
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username,
                password=self.smtp.password.get_secret_value() if self.smtp.password else None,
                start_tls=self.smtp.start_tls,
                use_tls=self.smtp.use_tls,
                timeout=self.settings.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return domain.Outcome(ok=False, error=f"recipient refused: {exc}"[:500], retryable=False)
        return domain.Outcome(ok=True)
