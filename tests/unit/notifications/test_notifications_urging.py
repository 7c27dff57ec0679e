"""Who hears of an urging (督办) and of a decided extension; an approved extension re-plans the reminders."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.notifications import domain
from shared import events as ev

T0 = datetime(2026, 4, 7, 1, 0, tzinfo=UTC)
HAZARD = uuid.uuid4()
DISPATCH = uuid.uuid4()


def _meta(at: datetime, producer: str = "dispatch") -> dict[str, object]:
    return {"event_id": uuid.uuid4(), "occurred_at": at, "hazard_id": HAZARD, "producer": producer}


def dispatched() -> ev.HazardDispatched:
    return ev.HazardDispatched(
        **_meta(T0),  # type: ignore[arg-type]
        payload=ev.HazardDispatchedPayload(
            dispatch_id=DISPATCH,
            department_id="fire",
            rule_id="r",
            receipt_deadline=T0 + timedelta(hours=2),
            deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=False),
        ),
    )


def decided(*, approved: bool, at: datetime) -> ev.HazardExtensionDecided:
    original = T0 + timedelta(hours=2)
    wanted = T0 + timedelta(hours=6)
    return ev.HazardExtensionDecided(
        **_meta(at),  # type: ignore[arg-type]
        payload=ev.HazardExtensionDecidedPayload(
            stage="receipt",
            dispatch_id=DISPATCH,
            department_id="fire",
            original_deadline=original,
            requested_deadline=wanted,
            approved=approved,
            deadline=wanted if approved else original,
            by="op-1",
        ),
    )


def urged() -> ev.HazardUrged:
    return ev.HazardUrged(
        **_meta(T0 + timedelta(minutes=10), "tracking"),  # type: ignore[arg-type]
        payload=ev.HazardUrgedPayload(
            urging_id=uuid.uuid4(), department_id="fire", stage="receipt", note="快", urged_by="sup-1"
        ),
    )


def test_an_urging_reaches_the_department_every_escalation_target_and_its_contacts_once() -> None:
    notices = domain.notices_for(urged(), escalation_targets=("supervisor", "district", "supervisor"))
    assert [(n.audience.scope, n.audience.scope_id) for n in notices] == [
        ("department", "fire"),
        ("escalation", "supervisor"),
        ("escalation", "district"),
        ("contact", "fire"),  # the department's administered escalation contacts, every one of them
    ]
    assert {n.trigger for n in notices} == {"urged"}
    assert domain.contact_level(notices[-1]) is None
    assert notices[0].facts["note"] == "快"
    assert len({n.source_id for n in notices}) == 1  # one event: deliveries keyed (event, subscription)


def test_a_decided_extension_tells_the_department_and_a_request_tells_nobody() -> None:
    [notice] = domain.notices_for(decided(approved=False, at=T0 + timedelta(minutes=30)))
    assert (notice.trigger, notice.audience) == ("extension_decided", domain.Audience("department", "fire"))
    assert notice.facts["approved"] is False
    requested = ev.HazardExtensionRequested(
        **_meta(T0),  # type: ignore[arg-type]
        payload=ev.HazardExtensionRequestedPayload(
            stage="receipt",
            department_id="fire",
            original_deadline=T0,
            requested_deadline=T0 + timedelta(hours=1),
            reason="r",
            by="d",
        ),
    )
    assert domain.notices_for(requested) == []
    assert requested.TYPE not in domain.INTERESTED


def test_an_approval_replans_the_receipt_reminders_for_the_new_deadline_and_a_refusal_keeps_them() -> None:
    at = T0 + timedelta(hours=1)
    plan = domain.plan_batch([dispatched(), decided(approved=True, at=at)], fractions=(0.5,), now=T0)
    [reminder] = plan.reminders
    assert reminder.deadline == T0 + timedelta(hours=6)
    assert reminder.due_at == at + (T0 + timedelta(hours=6) - at) * 0.5
    assert (HAZARD, "receipt") in plan.cancel
    kept = domain.plan_batch([dispatched(), decided(approved=False, at=at)], fractions=(0.5,), now=T0)
    [original] = kept.reminders
    assert original.deadline == T0 + timedelta(hours=2)


def test_the_messages_are_chinese_first_with_english_on_request() -> None:
    [notice] = domain.notices_for(decided(approved=True, at=T0))
    zh = domain.render(notice.as_json(), language="zh", department_name="消防", subscription_id=uuid.uuid4())
    en = domain.render(notice.as_json(), language="en", department_name="Fire", subscription_id=uuid.uuid4())
    assert zh.subject == "[隐患督办] 延期申请已处理"
    assert "是否批准: 批准" in zh.text
    assert "环节: 接收" in zh.text
    assert "Approved: approved" in en.text
    assert "Original deadline" in en.text
