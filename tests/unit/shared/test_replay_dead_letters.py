"""Which dead letters the replay command takes, and what a replayed event carries."""

from __future__ import annotations

import pytest

from shared.replay_dead_letters import DeadLetter, Selection, _arguments, replay_headers, select


def _dead(offset: int, consumer: str, event_id: str, reason: str = "failed", **extra: str) -> DeadLetter:
    headers = {
        "event_id": event_id,
        "event_type": "hazard.reported",
        "hazard_id": "h-" + event_id,
        "dlt_consumer": consumer,
        "dlt_reason": reason,
        "dlt_error": "boom",
        "dlt_origin_topic": "hazard.lifecycle",
        "dlt_origin_partition": "2",
        "dlt_origin_offset": str(100 + offset),
        **extra,
    }
    return DeadLetter(0, offset, b"h-" + event_id.encode(), b"{}", headers)


DEAD = [
    _dead(0, "dispatch", "e1"),
    _dead(1, "tracking", "e1", reason="rejected"),
    _dead(2, "dispatch", "e2", reason="rejected"),
    _dead(3, "dispatch", "e1"),  # the same failure dead-lettered again (a redelivery)
    _dead(4, "reporting", "e3", reason="invalid"),
]


def test_each_failure_is_replayed_once_per_service_in_topic_order() -> None:
    chosen = select(DEAD, Selection(all=True))
    assert [(d.consumer, d.headers["event_id"], d.offset) for d in chosen] == [
        ("dispatch", "e1", 0),
        ("tracking", "e1", 1),
        ("dispatch", "e2", 2),
        ("reporting", "e3", 4),
    ]


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(services=frozenset({"dispatch"})), [0, 2]),
        (Selection(reasons=frozenset({"rejected"})), [1, 2]),
        (Selection(event_ids=frozenset({"e1"})), [0, 1]),
        (Selection(services=frozenset({"dispatch"}), reasons=frozenset({"rejected"})), [2]),
        (Selection(services=frozenset({"tracking", "reporting"})), [1, 4]),
        (Selection(), []),
    ],
)
def test_criteria_of_one_kind_are_alternatives_and_of_different_kinds_all_apply(
    selection: Selection, expected: list[int]
) -> None:
    assert [d.offset for d in select(DEAD, selection)] == expected


def test_a_dead_letter_naming_no_service_is_never_replayed() -> None:
    anonymous = DeadLetter(0, 9, None, b"x", {"dlt_reason": "invalid"})
    assert select([anonymous], Selection(all=True)) == []


def test_a_replay_carries_the_event_headers_and_whom_it_is_for_not_the_failure() -> None:
    headers = replay_headers(DEAD[1], "hazard.lifecycle.dlt")
    assert headers == {
        "event_type": "hazard.reported",
        "event_id": "e1",
        "hazard_id": "h-e1",
        "replay_for": "tracking",
        "replayed_from": "hazard.lifecycle.dlt:0:1",
    }


def test_the_command_refuses_to_guess_what_to_replay(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _arguments(["--bootstrap-servers", "k:9092"])
    assert "--all, --reason, --service or --event-id" in capsys.readouterr().err
    args = _arguments(["--bootstrap-servers", "k:9092", "--service", "dispatch", "--service", "tracking"])
    assert args.service == ["dispatch", "tracking"]
