"""Small, pure geometry helpers on WGS84 latitude/longitude in degrees."""

from __future__ import annotations

import math
from collections.abc import Sequence

EARTH_RADIUS_M = 6_371_000.0
"""Mean Earth radius used by `haversine_m`, in metres."""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS84 points given in degrees."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    d_phi = phi2 - phi1
    d_lambda = math.radians(lon2 - lon1)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(d_lambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def point_in_polygon(lat: float, lon: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Whether (lat, lon) lies inside or on the edge of a simple polygon of (lat, lon) vertices."""
    n = len(polygon)
    if n < 3:
        return False
    inside = False
    for i in range(n):
        lat_a, lon_a = polygon[i]
        lat_b, lon_b = polygon[(i + 1) % n]
        if _on_segment(lat, lon, lat_a, lon_a, lat_b, lon_b):
            return True
        if (lat_a > lat) != (lat_b > lat):
            lon_cross = lon_a + (lat - lat_a) * (lon_b - lon_a) / (lat_b - lat_a)
            if lon < lon_cross:
                inside = not inside
    return inside


def _on_segment(lat: float, lon: float, lat_a: float, lon_a: float, lat_b: float, lon_b: float) -> bool:
    """Whether the point lies on the segment a-b (within a tiny tolerance)."""
    cross = (lat_b - lat_a) * (lon - lon_a) - (lon_b - lon_a) * (lat - lat_a)
    if abs(cross) > 1e-12:
        return False
    return min(lat_a, lat_b) - 1e-12 <= lat <= max(lat_a, lat_b) + 1e-12 and (
        min(lon_a, lon_b) - 1e-12 <= lon <= max(lon_a, lon_b) + 1e-12
    )
