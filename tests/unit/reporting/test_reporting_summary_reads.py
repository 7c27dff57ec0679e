"""What the summary computes outside the database gives exactly what it did before: medians located
from merged buckets (domain.merged_median, which domain.histogram_median also uses) and group labels looked up in an index
(reports.labeller)."""

from __future__ import annotations

import random

from services.reporting import domain, reports
from shared.reference import load_reference_data


def _merged(rows: list[tuple[int, int, float]]) -> tuple[list[int], list[int], list[float]]:
    """Rows of several days summed per bucket, as the summary's SQL merges them (any order)."""
    merged: dict[int, tuple[int, float]] = {}
    for bucket, n, total in rows:
        had_n, had_total = merged.get(bucket, (0, 0.0))
        merged[bucket] = (had_n + n, had_total + total)
    buckets = list(merged)
    random.Random(len(rows)).shuffle(buckets)
    return buckets, [merged[b][0] for b in buckets], [merged[b][1] for b in buckets]


def test_merged_median_is_histogram_median() -> None:
    rng = random.Random(6)
    for _ in range(500):
        rows = []
        for _ in range(rng.randint(1, 300)):
            value = rng.lognormvariate(3.5, 1.2)
            rows.append(
                (domain.histogram_bucket(value, floor=1.0), rng.randint(1, 4), value * rng.randint(1, 4))
            )
        buckets, ns, totals = _merged(rows)
        # Every value stands in as its bucket's mean, in bucket order; the middle one(s) of that list.
        means = [t / n for _, n, t in sorted(zip(buckets, ns, totals, strict=True)) for _ in range(n)]
        expected = (means[(len(means) - 1) // 2] + means[len(means) // 2]) / 2
        assert domain.histogram_median(rows) == expected
        assert domain.merged_median(buckets, ns, totals) == expected  # the same floats, exactly


def test_merged_median_of_small_histograms() -> None:
    assert domain.merged_median([9, 5], [1, 3], [20.0, 9.0]) == 3.0  # (3 + 3) / 2, bucket 5 first
    assert domain.merged_median([9, 5], [2, 2], [40.0, 6.0]) == (3.0 + 20.0) / 2
    assert domain.merged_median([7], [1], [4.5]) == 4.5
    assert domain.merged_median([], [], []) is None


def test_labeller_gives_label() -> None:
    reference = load_reference_data()
    known = {
        "department": ["", *(d.id for d in reference.departments)],
        "category": [c.code for c in reference.categories],
        "community": [c.id for c in reference.communities],
        "grid": [g.id for g in reference.grids],
        "campaign": [c.id for c in reference.campaigns],
    }
    assert all(known.values())
    for group_by, keys in known.items():
        name = reports.labeller(reference, group_by)
        for key in [*keys, "no-such-id", ""]:
            assert name(key) == reports.label(reference, group_by, key), (group_by, key)
