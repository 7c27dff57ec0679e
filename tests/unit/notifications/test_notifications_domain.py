"""Pure decisions of the notifications service: notices, reminders, retries, targets, rendering."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.notifications import domain
from services.notifications.sender import sign
from shared import events as ev
from tests.integration.notifications.notifications_helpers import Hazard

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_each_trigger_goes_to_its_audience() -> None:
    hazard = Hazard(start=NOW)
    cases = [
        (hazard.dispatched(), "dispatched", domain.Audience("department", "fire")),
        (hazard.receipt_overdue(), "receipt_overdue", domain.Audience("department", "fire")),
        (hazard.rectification_ordered(), "rectification_ordered", domain.Audience("department", "fire")),
        (hazard.rectification_ordered(round=2), "rework", domain.Audience("department", "fire")),
        (hazard.rectification_overdue(), "rectification_overdue", domain.Audience("department", "fire")),
        (hazard.relapsed("police"), "relapsed", domain.Audience("department", "police")),
    ]
    for event, trigger, audience in cases:
        [notice] = domain.notices_for(event)
        assert (notice.trigger, notice.audience, notice.source_id) == (trigger, audience, event.event_id)
    assert domain.notices_for(hazard.acknowledged()) == []
    assert domain.notices_for(hazard.relapsed(None)) == []


def test_an_escalation_goes_to_its_levels_target_and_to_the_departments_administered_contacts() -> None:
    hazard = Hazard(start=NOW)
    contacts = domain.Audience("contact", "fire")
    for event, audience in [
        (hazard.escalated(1, "department"), domain.Audience("department", "fire")),
        (hazard.escalated(3, "district"), domain.Audience("escalation", "district")),
    ]:
        notices = domain.notices_for(event)
        assert [n.audience for n in notices] == [audience, contacts]
        assert {(n.trigger, n.source_id) for n in notices} == {("escalated", event.event_id)}
        assert domain.contact_level(notices[1]) == event.payload.level


def test_administered_contacts_are_told_by_email_at_their_levels_once_per_address() -> None:
    raw = [
        {"name": "王队长", "email": "Chief@fire.example.org", "levels": [3, 2, 2]},
        {"name": "李副队长", "email": "deputy@fire.example.org"},
        {"name": "again", "email": "chief@fire.example.org"},  # the same address: told once
        {"name": "值班室", "phone": "0571-12345"},  # no channel for a telephone here
        {"name": "typo", "email": "nobody@localhost"},  # not an address mail can reach
        "not a contact",
    ]
    chief, deputy = domain.contacts_from_admin("fire", raw)
    assert (chief.email, chief.levels, deputy.levels) == ("Chief@fire.example.org", (2, 3), None)
    assert [chief.told_at(level) for level in (1, 2, 3, None)] == [False, True, True, True]
    assert all(deputy.told_at(level) for level in (1, 2, 3, None))
    # The subscription id depends on the department and the address (any case), nothing else.
    same = domain.contacts_from_admin("fire", [{"name": "renamed", "email": "chief@FIRE.example.org"}])[0]
    assert same.subscription_id == chief.subscription_id
    assert domain.contacts_from_admin("police", raw)[0].subscription_id != chief.subscription_id


def test_reminders_fall_at_fractions_of_the_window_and_never_after_the_deadline() -> None:
    hazard = Hazard(start=NOW)
    dispatched = hazard.dispatched(receipt_in=timedelta(hours=2))
    plan = domain.plan_batch([dispatched], fractions=(0.8, 0.5), now=NOW)
    assert sorted((r.fraction, r.due_at) for r in plan.reminders) == [
        (0.5, NOW + timedelta(hours=1)),
        (0.8, NOW + timedelta(minutes=96)),
    ]
    # The same event planned again gives the same reminder ids (written once).
    again = domain.plan_batch([dispatched], fractions=(0.5, 0.8), now=NOW)
    assert {r.reminder_id for r in again.reminders} == {r.reminder_id for r in plan.reminders}
    # Seen after its deadline (a consumer far behind): no reminder.
    assert domain.plan_batch([dispatched], fractions=(0.5,), now=NOW + timedelta(hours=3)).reminders == []


def test_acknowledgement_in_the_same_batch_settles_the_reminders_it_planned() -> None:
    hazard = Hazard(start=NOW)
    plan = domain.plan_batch([hazard.dispatched(), hazard.acknowledged()], fractions=(0.5, 0.8), now=NOW)
    assert plan.reminders == []
    assert (hazard.hazard_id, "receipt") in plan.cancel
    ordered = domain.plan_batch([hazard.rectification_ordered()], fractions=(0.5,), now=NOW)
    assert [r.kind for r in ordered.reminders] == ["rectification"]
    assert ordered.cancel == {(hazard.hazard_id, "rectification")}  # an earlier round's reminders


def test_retry_delay_grows_with_jitter_and_gives_up_after_the_retry_window() -> None:
    rand = random.Random(7)
    delays = [domain.retry_delay_s(n, base_s=10, max_s=3600, rand=rand) for n in range(1, 15)]
    assert all(5 <= d <= 3600 for d in delays)
    assert delays[0] <= 10
    assert max(delays[-4:]) > 600
    failing = domain.Outcome(ok=False, error="HTTP 500")
    created = NOW
    status, at = domain.after_attempt(
        failing, attempts=1, created_at=created, now=NOW, base_s=10, max_s=3600, retry_for_s=86_400, rand=rand
    )
    assert status == "retrying"
    assert at is not None
    assert NOW + timedelta(seconds=5) <= at <= NOW + timedelta(seconds=10)
    late = NOW + timedelta(hours=24)
    assert domain.after_attempt(
        failing, attempts=20, created_at=created, now=late, base_s=10, max_s=3600, retry_for_s=86_400
    ) == ("failed", None)
    refused = domain.Outcome(ok=False, error="HTTP 404", retryable=False)
    assert domain.after_attempt(
        refused, attempts=1, created_at=created, now=NOW, base_s=10, max_s=3600, retry_for_s=86_400
    ) == ("failed", None)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.0.0.8", False),
        ("172.16.4.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
    ],
)
def test_only_public_addresses_are_webhook_targets(address: str, public: bool) -> None:
    assert domain.is_public_address(address) is public


@pytest.mark.parametrize(
    "address", ["plain", "@example.org", "a@b", "a b@example.org", "<a@example.org>", "a@example.org."]
)
def test_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(domain.InvalidSubscription):
        domain.check_email_address(address)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.org/hook", "must start with http"),
        ("http:///hook", "needs a host"),
        ("https://user:pw@example.org/hook", "credentials"),
        ("https://example.org/a\u00a0hook", "no spaces"),
        ("https://example.org/a\x1chook", "no spaces"),
        ("http://example.org:99999/hook", "not a URL"),
    ],
)
def test_a_malformed_webhook_url_is_refused_every_time_it_is_checked(url: str, problem: str) -> None:
    # The check's answer is remembered per URL string (the sender checks before every send): a
    # refusal must come back as a refusal, with its reason, on every call.
    for _ in range(2):
        with pytest.raises(domain.InvalidSubscription) as refused:
            domain.check_webhook_url(url)
        assert refused.value.field == "url"
        assert problem in refused.value.problem


def test_a_webhook_urls_host_and_port_are_read_from_it() -> None:
    assert domain.check_webhook_url("https://hooks.example.org/x") == ("hooks.example.org", 443)
    assert domain.check_webhook_url("http://hooks.example.org/x") == ("hooks.example.org", 80)
    assert domain.check_webhook_url("http://127.0.0.1:8081/x") == ("127.0.0.1", 8081)


def test_messages_are_chinese_by_default_english_on_request_and_fit_the_robots() -> None:
    notice = domain.notices_for(Hazard(start=NOW).dispatched())[0].as_json()
    sub = uuid.uuid4()
    zh = domain.render(notice, language="zh", department_name="消防监督", subscription_id=sub)
    en = domain.render(notice, language="en", department_name="Fire Safety", subscription_id=sub)
    assert zh.subject == "[隐患督办] 派单：新的隐患需要您接收"
    assert en.subject == "[hazard-dispatch] Dispatched: a new hazard for you to acknowledge"
    assert "消防监督" in zh.text
    assert "<th>Department</th><td>Fire Safety</td>" in en.html
    assert zh.body["trigger"] == "dispatched"
    assert zh.body["subscription_id"] == str(sub)
    wecom = domain.render(notice, language="zh", department_name="消防", subscription_id=sub, fmt="wecom")
    assert wecom.body == {"msgtype": "text", "text": {"content": wecom.text}}
    ding = domain.render(notice, language="zh", department_name="消防", subscription_id=sub, fmt="dingtalk")
    assert ding.body["msgtype"] == "markdown"
    assert ding.body["markdown"]["title"] == "派单：新的隐患需要您接收"


def test_signature_is_hmac_sha256_of_the_body() -> None:
    assert sign(b"key", b"The quick brown fox jumps over the lazy dog") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_a_reassignment_replaces_the_previous_dispatchs_reminders_and_closure_settles_all() -> None:
    hazard = Hazard(start=NOW)
    first = hazard.dispatched("fire")
    second = hazard.dispatched("police")
    plan = domain.plan_batch([first, second], fractions=(0.5,), now=NOW)
    assert [(r.department_id, r.kind) for r in plan.reminders] == [("police", "receipt")]
    assert plan.cancel == {(hazard.hazard_id, "receipt")}
    closed = ev.HazardClosed(
        event_id=uuid.uuid4(),
        occurred_at=NOW,
        hazard_id=hazard.hazard_id,
        producer="tracking",
        payload=ev.HazardClosedPayload(reason="verified", department_id="fire", closed_by="gm-1"),
    )
    ordered = hazard.rectification_ordered()
    plan = domain.plan_batch([ordered, closed], fractions=(0.5, 0.8), now=NOW)
    assert plan.reminders == []
    assert plan.cancel == {(hazard.hazard_id, "receipt"), (hazard.hazard_id, "rectification")}
    assert [n.trigger for n in plan.notices] == ["rectification_ordered"]


@pytest.mark.parametrize(
    ("channel", "target", "shown"),
    [
        ("webhook", "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=ROBOT-KEY", "qyapi.weixin.qq.com"),
        ("webhook", "http://127.0.0.1:8106/fire/hook?token=abc", "127.0.0.1:8106"),
        ("email", "duty@fire.example.org", "d***@fire.example.org"),
    ],
)
def test_the_timeline_shows_a_webhooks_host_and_a_masked_address_only(
    channel: str, target: str, shown: str
) -> None:
    assert domain.recipient_shown(channel, target) == shown


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (None, None),
        ("HTTP 503: upstream says: secret internals", "HTTP 503"),
        ("no answer within 10 s", "timeout"),
        ("ClientConnectorError: Cannot connect to host 10.0.0.1:443", "ClientConnectorError"),
        ("recipient refused: {'x@y.org': (550, b'no such user')}", "error"),
    ],
)
def test_a_failure_is_recorded_by_its_kind_never_the_receivers_words(
    error: str | None, kind: str | None
) -> None:
    assert domain.error_kind(error) == kind


def test_the_record_of_a_delivery_has_one_id_whoever_sends_it() -> None:
    hazard = Hazard()
    [notice] = domain.notices_for(hazard.dispatched())
    subscription = uuid.uuid4()
    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def record(status: str, attempts: int) -> ev.HazardNotified:
        return domain.notified_event(
            notice=notice.as_json(),
            source_id=notice.source_id,
            subscription_id=subscription,
            channel="webhook",
            target="https://hooks.example.org/fire?key=K",
            status=status,
            attempts=attempts,
            error="HTTP 500: boom",
            at=at,
        )

    sent, again = record("sent", 1), record("sent", 2)
    assert sent.event_id == again.event_id
    assert sent.causation_id == sent.payload.source_id == notice.source_id
    assert (sent.payload.result, sent.payload.error, sent.payload.recipient) == (
        "delivered",
        None,
        "hooks.example.org",
    )
    failed = record("failed", 7)
    assert (failed.payload.result, failed.payload.error, failed.payload.attempts) == ("failed", "HTTP 500", 7)
    assert (
        domain.notified_event(
            notice=notice.as_json(),
            source_id=notice.source_id,
            subscription_id=uuid.uuid4(),
            channel="email",
            target="duty@fire.example.org",
            status="sent",
            attempts=1,
            error=None,
            at=at,
        ).event_id
        != sent.event_id
    )
