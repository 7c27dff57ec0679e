"""The service processes' garbage collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from shared.runner import GC_GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_tune_gc_collects_less_often_and_freezes_what_start_up_built(restored_gc: None) -> None:
    built_at_start_up = [{"reference": i} for i in range(1000)]
    tune_gc()
    assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 50, 100)
    assert GC_GEN0_THRESHOLD > 700  # CPython's default, which the measurement replaced
    assert gc.get_freeze_count() >= len(built_at_start_up)


def test_cyclic_garbage_is_still_collected_automatically_after_tuning(restored_gc: None) -> None:
    tune_gc()
    collected = []

    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

        def __del__(self) -> None:
            collected.append(True)

    for _ in range(50):
        Node()
    assert collected == []
    # Enough live allocations for the young generation's pass to run on its own.
    alive = [[] for _ in range(GC_GEN0_THRESHOLD + 1000)]
    assert len(collected) == 50
    del alive
