"""The end-to-end bench's diagnostics (#20): rows written by table, and latency by window of accept time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.cpu import CpuSampler
from bench.end_to_end import accepted_latencies, latency_series, table_writes_per_hazard
from bench.loadgen import Accepted
from bench.report import latency_series_lines, rows_by_table_lines
from tests.support.oracles import TopicFacts


def _counts(ins: int, upd: int, hot: int, dele: int) -> dict[str, int]:
    return {"inserted": ins, "updated": upd, "hot_updated": hot, "deleted": dele}


def test_rows_by_table_are_the_differences_per_hazard_largest_first() -> None:
    before = {"intake.outbox": _counts(100, 0, 0, 90), "tracking.cases": _counts(5, 7, 3, 0)}
    after = {
        "intake.outbox": _counts(300, 0, 0, 290),
        "tracking.cases": _counts(105, 57, 43, 0),
        "tracking.quiet": _counts(0, 0, 0, 0),
        "reporting.new_table": _counts(10, 0, 0, 0),
    }
    rows = table_writes_per_hazard(before, after, hazards=100)
    assert [r["table"] for r in rows] == ["intake.outbox", "tracking.cases", "reporting.new_table"]
    outbox, cases, new = rows
    assert outbox == {
        "table": "intake.outbox",
        "inserted": 2.0,
        "updated": 0.0,
        "hot_updated": 0.0,
        "deleted": 2.0,
        "total": 4.0,
        "rows": 400,
    }
    assert (cases["inserted"], cases["updated"], cases["hot_updated"], cases["total"]) == (1.0, 0.5, 0.4, 1.5)
    assert new["total"] == 0.1


def _accepted(hazard: str, at: float) -> Accepted:
    return Accepted(
        report_id=hazard,
        hazard_id=hazard,
        grid_id="g",
        category="c",
        on_site=False,
        building_id="b",
        duplicate_of=None,
        scheduled_at=at,
        sent_at=at,
        accepted_at=at,
        batch=False,
    )


def test_latency_series_buckets_by_accept_time_and_measures_both_hops() -> None:
    facts = TopicFacts()
    accepted = []
    # Window 0: ten hazards dispatched 0.1 s after acceptance; window 2: ten at 1.0 s; window 1 empty.
    for i, (at, delay) in enumerate([(1000.0 + j * 0.1, 0.1) for j in range(10)] + [(1010.5, 1.0)] * 10):
        hazard = f"h{i}"
        accepted.append(_accepted(hazard, at))
        facts.reported_ts[hazard] = at + 0.01
        facts.dispatched_decided[hazard] = at + delay - 0.02
        facts.dispatched_ts[hazard] = at + delay
    accepted.append(_accepted("never-dispatched", 1001.0))
    rows = latency_series(accepted, facts, None, window_s=5.0)
    assert [r["t_s"] for r in rows] == [0.0, 5.0, 10.0]
    assert [r["accepted"] for r in rows] == [11, 0, 10]
    assert rows[0]["accepted_to_dispatched"]["n"] == 10
    assert rows[0]["accepted_to_dispatched"]["p99_ms"] == pytest.approx(100.0, abs=0.2)
    assert rows[0]["reported_to_dispatch_decided"]["p50_ms"] == pytest.approx(70.0, abs=0.2)
    assert rows[1]["accepted_to_dispatched"] == {"n": 0}
    assert rows[2]["accepted_to_dispatched"]["p50_ms"] == pytest.approx(1000.0, abs=0.2)
    assert "cpu_pct" not in rows[0]
    by_second = latency_series(accepted, facts, None, window_s=1.0)
    assert len(by_second) == 11
    assert sum(r["accepted"] for r in by_second) == len(accepted)
    lines = latency_series_lines({"series": rows, "series_window_s": 5.0, "series_1s": by_second})
    assert any(line.startswith("| 10 s | 10 | 10 | 1,000.0 ms |") for line in lines), lines
    # Second 0: the ten dispatched after 0.1 s; second 1: only the one never dispatched; then none until 10.
    assert lines[-1] == (
        "Accepted → `hazard.dispatched` p99 by second of the first 10 s (ms): 100.0" + ", n/a" * 9 + "."
    )


def test_cpu_sampler_window_is_the_cpu_share_between_the_nearest_samples() -> None:
    sampler = CpuSampler([])
    sampler.samples = [(100.0, {"broker": 1.0}), (101.0, {"broker": 1.5}), (105.0, {"broker": 3.5})]
    assert sampler.window(100.0, 105.0) == {"broker": 50}
    assert sampler.window(101.2, 104.6) == {"broker": 50}
    assert sampler.window(105.0, 105.0) == {}


def test_rows_by_table_are_rendered_for_both_mixes() -> None:
    realistic = {
        "work_per_hazard": {
            "rows_written_by_table": table_writes_per_hazard({}, {"a.t": _counts(100, 50, 25, 0)}, 100)
        }
    }
    distinct = {
        "work_per_hazard": {
            "rows_written_by_table": table_writes_per_hazard(
                {}, {"a.t": _counts(200, 0, 0, 0), "b.u": _counts(300, 0, 0, 0)}, 100
            )
        }
    }
    lines = rows_by_table_lines(realistic, distinct)
    assert "| b.u |  |  | 3.00 / 0.00 (0.00) / 0.00 | 3.00 |" in lines
    assert "| a.t | 1.00 / 0.50 (0.25) / 0.00 | 1.50 | 2.00 / 0.00 (0.00) / 0.00 | 2.00 |" in lines
    assert lines[-1] == "| **all tables** |  | **1.50** |  | **5.00** |"


def test_after_warmup_leaves_out_what_was_accepted_in_the_first_seconds() -> None:
    accepted = [SimpleNamespace(hazard_id=i, accepted_at=100.0 + i) for i in range(10)]
    # The first five waited for the idle fetch (1 s); the rest 0.1 s. Hazard 7 was never dispatched.
    dispatched = {i: 100.0 + i + (1.0 if i < 5 else 0.1) for i in range(10) if i != 7}
    # Reporting counted the k-th at its accept time + 0.5 s, but never the 10th.
    counted = {k: 100.0 + (k - 1) + 0.5 for k in range(1, 10)}

    to_dispatch, to_reporting = accepted_latencies(accepted, dispatched, counted.get, after_s=5.0)

    assert to_dispatch == pytest.approx([0.1, 0.1, 0.1, 0.1])  # hazards 5, 6, 8, 9
    assert to_reporting == pytest.approx([0.5, 0.5, 0.5, 0.5])  # k = 6..9; the 10th never counted

    # Without the warm-up cut: the whole phase's figures.
    whole_dispatch, whole_reporting = accepted_latencies(accepted, dispatched, counted.get)
    assert sorted(whole_dispatch) == pytest.approx([0.1] * 4 + [1.0] * 5)
    assert whole_reporting == pytest.approx([0.5] * 9)
