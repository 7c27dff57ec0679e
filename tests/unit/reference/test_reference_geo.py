"""Distance and point-in-polygon sanity."""

from __future__ import annotations

import pytest

from shared.reference import haversine_m, point_in_polygon

SQUARE = [(0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)]


def test_haversine_of_the_same_point_is_zero() -> None:
    assert haversine_m(22.64, 114.2, 22.64, 114.2) == 0.0


def test_haversine_one_degree_of_latitude() -> None:
    assert haversine_m(22.0, 114.0, 23.0, 114.0) == pytest.approx(111_194.9, abs=0.1)


def test_haversine_is_symmetric_and_short_distances_are_metres() -> None:
    # 0.0003 degrees of latitude is about 33 m: just beyond the 30 m duplicate radius
    there = haversine_m(22.64, 114.2, 22.6403, 114.2)
    back = haversine_m(22.6403, 114.2, 22.64, 114.2)
    assert there == back
    assert there == pytest.approx(33.36, abs=0.01)


def test_haversine_shenzhen_to_guangzhou() -> None:
    # Shenzhen civic center to Guangzhou's Canton Tower: about 98 km as the crow flies
    assert haversine_m(22.5431, 114.0579, 23.1064, 113.3245) / 1000 == pytest.approx(97.8, abs=0.5)


def test_point_in_polygon_inside_outside_and_on_the_edge() -> None:
    assert point_in_polygon(0.5, 0.5, SQUARE)
    assert not point_in_polygon(1.5, 0.5, SQUARE)
    assert not point_in_polygon(0.5, -0.1, SQUARE)
    assert point_in_polygon(0.0, 0.5, SQUARE)
    assert point_in_polygon(1.0, 1.0, SQUARE)
    assert not point_in_polygon(0.5, 0.5, SQUARE[:2])
