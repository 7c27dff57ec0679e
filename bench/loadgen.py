"""A realistic load generator built from the reference data, driving the public HTTP APIs.

What it sends, and why (figures from ``shared/DOMAIN.md``):

* categories in the street's mix: ~79% fire, ~1.4% public security, ~20% other (production
  safety counted with "other", as the street's reports do); inside each group the campaign
  figures weight the codes (direct-vent heaters and locked rooftop doors dominate fire);
* reports from reporters bound to the grid they report in, spread over every grid; positions
  come from a per-grid pool of buildings, so the same building keeps the same place;
* some reports fixed on the spot (``rectified_on_site``), some sent as offline batches
  (``POST /api/v1/hazards/batch``) the way a phone syncs after a patrol;
* department behaviour: most acknowledge promptly, some late, some never; a few return the
  hazard; rectification with evidence, reporter verification that sometimes fails (rework),
  and relapses: a closed hazard reported again at the same building, seen after its closure
  (tracking counts no relapse observed before the closure), ``BehaviourMix.relapse`` of the
  closed hazards.

Modes: ``--demo`` (a few hundred hazards with the full behaviour, for ``make run``), a fixed
offered rate (``--rate``) and maximum throughput (``--max``). Pure planning functions (mix,
schedule, behaviour) are separate from the HTTP driver so they are unit-tested.

Principals: ``--make-tokens DIR`` writes one reporter per grid plus every department, an
operator and a supervisor: ``DIR/tokens.yaml`` (SHA-256 hashes, for ``<SVC>__AUTH__TOKENS_FILE``)
and ``DIR/tokens.json`` (the plain tokens, for ``--tokens``). ``--tokens`` also reads the
runner's ``.run/demo-tokens.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import io
import json
import math
import random
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import yaml

from bench.leanhttp import LeanError, LeanPool
from shared.progress import Progress
from shared.reference import ReferenceData, load_reference_data

# ---------------------------------------------------------------- the category mix

GROUP_SHARES: dict[str, float] = {"fire": 0.79, "public_security": 0.014, "other": 0.196}
"""Share of each reporting group (spring campaign: 4,687 fire, 86 public security, 1,193 other)."""

CODE_WEIGHTS: dict[str, float] = {
    # fire: the campaign counts (3,235 heaters, 1,545 rooftop doors, 506 electrical, 315 rentals /
    # three-in-one, 84 blocked passages); codes without a published count get a modest weight.
    "direct_vent_water_heater": 3235,
    "locked_rooftop_door": 1545,
    "electrical_fire_hazard": 506,
    "ebike_indoor_charging": 400,
    "group_rental_fire_hazard": 200,
    "three_in_one_premises": 115,
    "blocked_fire_passage": 84,
    "fire_equipment_missing": 150,
    # other (incl. production safety): 302 sporadic works in five months, the rest spread.
    "sporadic_construction_works": 302,
    "gas_leak": 150,
    "road_hazard": 250,
    "illegal_structure": 250,
    "other": 241,
}
"""Relative weight of a code inside its group (unknown codes weigh 100)."""


def report_group(group: str) -> str:
    """The reporting group a category group counts under (production safety counts as other)."""
    return group if group in ("fire", "public_security") else "other"


class CategoryMix:
    """Draws category codes with the street's group shares and in-group weights."""

    def __init__(self, reference: ReferenceData) -> None:
        """Build the cumulative weights from the reference data's categories."""
        by_group: dict[str, list[str]] = {}
        for category in reference.categories:
            by_group.setdefault(report_group(category.group), []).append(category.code)
        weights: dict[str, float] = {}
        present = {g: s for g, s in GROUP_SHARES.items() if by_group.get(g)}
        total_share = sum(present.values())
        for group, share in present.items():
            codes = by_group[group]
            inner = sum(CODE_WEIGHTS.get(code, 100.0) for code in codes)
            for code in codes:
                weights[code] = share / total_share * CODE_WEIGHTS.get(code, 100.0) / inner
        self.weights = weights
        self.group_of = {c.code: report_group(c.group) for c in reference.categories}
        self._codes = list(weights)
        self._cumulative: list[float] = []
        running = 0.0
        for code in self._codes:
            running += weights[code]
            self._cumulative.append(running)

    def pick(self, rng: random.Random) -> str:
        """One category code."""
        point = rng.random() * self._cumulative[-1]
        return self._codes[min(bisect.bisect_right(self._cumulative, point), len(self._codes) - 1)]


# ---------------------------------------------------------------- principals and tokens

Role = Literal["reporter", "department", "operator", "supervisor"]


@dataclass(frozen=True)
class Principal:
    """One caller of the APIs with its plain bearer token."""

    principal: str
    role: Role
    token: str
    grid_id: str | None = None
    department_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}


def make_principals(reference: ReferenceData, *, reporters_per_grid: int = 1) -> list[Principal]:
    """Fresh tokens: reporters for every grid, every department, one operator and one supervisor."""
    principals: list[Principal] = []
    for grid in reference.grids:
        for n in range(1, reporters_per_grid + 1):
            principals.append(
                Principal(f"gm-{grid.id}-{n}", "reporter", secrets.token_urlsafe(24), grid_id=grid.id)
            )
    for department in reference.departments:
        principals.append(
            Principal(
                f"dept-{department.id}", "department", secrets.token_urlsafe(24), department_id=department.id
            )
        )
    principals.append(Principal("operator-load", "operator", secrets.token_urlsafe(24)))
    principals.append(Principal("supervisor-load", "supervisor", secrets.token_urlsafe(24)))
    return principals


def write_token_files(principals: Sequence[Principal], directory: Path) -> tuple[Path, Path]:
    """Write ``tokens.yaml`` (hashes, for the services) and ``tokens.json`` (plain, for the generator)."""
    directory.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for p in principals:
        entry: dict[str, Any] = {
            "token_sha256": hashlib.sha256(p.token.encode()).hexdigest(),
            "principal": p.principal,
            "role": p.role,
        }
        if p.grid_id:
            entry["grid_id"] = p.grid_id
        if p.department_id:
            entry["department_id"] = p.department_id
        entries.append(entry)
    hashed = directory / "tokens.yaml"
    hashed.write_text("# Load-generator principals (sha256 of each token).\n" + yaml.safe_dump(entries))
    plain = directory / "tokens.json"
    plain.write_text(json.dumps([asdict(p) for p in principals], indent=1))
    plain.chmod(0o600)
    return hashed, plain


def load_principals(path: Path) -> list[Principal]:
    """Read ``tokens.json`` (from ``write_token_files``) or the runner's ``demo-tokens.txt``."""
    text = path.read_text()
    if path.suffix == ".json":
        return [Principal(**entry) for entry in json.loads(text)]
    principals = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        name, role, scope, token = fields[0], fields[1], fields[2], fields[-1].strip()
        grid = scope.split("=", 1)[1] if scope.startswith("grid=") else None
        department = scope.split("=", 1)[1] if scope.startswith("department=") else None
        principals.append(Principal(name, role, token, grid_id=grid, department_id=department))  # type: ignore[arg-type]
    return principals


# ---------------------------------------------------------------- places


@dataclass(frozen=True)
class Building:
    """A building in a grid, at a fixed position."""

    building_id: str
    lat: float
    lon: float
    address: str


def grid_cell(reference: ReferenceData, grid_id: str) -> tuple[float, float, float, float]:
    """A grid's cell: centre lat, centre lon, half height and half width in degrees (with a margin)."""
    grid = reference.grid(grid_id)
    box = reference.community_of_grid(grid_id).bbox
    # A grid's cell is a quarter of the community box wide and a third high; keep a margin inside.
    return (
        grid.center.lat,
        grid.center.lon,
        (box.north - box.south) / 3 / 2 * 0.85,
        (box.east - box.west) / 4 / 2 * 0.85,
    )


class DistinctPlaces:
    """Places no two of which are duplicates: per grid and category, points of a lattice spaced
    just over the duplicate distance (a report is linked only to an open hazard of its category
    within that distance or at the same building)."""

    def __init__(self, reference: ReferenceData, *, spacing_m: float | None = None) -> None:
        self.reference = reference
        self.spacing_m = spacing_m or reference.duplicate_distance_m * 1.1
        self._used: dict[tuple[str, str], int] = {}
        self._lattice: dict[str, list[tuple[float, float]]] = {}
        self.reused = 0
        """Reports that got a place already used, the lattice being exhausted (they may be linked)."""

    def lattice(self, grid_id: str) -> list[tuple[float, float]]:
        """The grid's lattice points, in a fixed order."""
        points = self._lattice.get(grid_id)
        if points is None:
            lat0, lon0, half_lat, half_lon = grid_cell(self.reference, grid_id)
            step_lat = self.spacing_m / 111_000.0
            step_lon = self.spacing_m / (111_000.0 * math.cos(math.radians(lat0)))
            rows, cols = max(1, int(2 * half_lat / step_lat)), max(1, int(2 * half_lon / step_lon))
            points = [
                (
                    round(lat0 - half_lat + (i + 0.5) * step_lat, 6),
                    round(lon0 - half_lon + (j + 0.5) * step_lon, 6),
                )
                for i in range(rows)
                for j in range(cols)
            ]
            self._lattice[grid_id] = points
        return points

    def has_room(self, grid_id: str, category: str) -> bool:
        """Whether the grid still has an unused place for the category."""
        return self._used.get((grid_id, category), 0) < len(self.lattice(grid_id))

    def take(self, grid_id: str, category: str) -> Building:
        """The next unused place of the grid for the category (a used one once none is left)."""
        points = self.lattice(grid_id)
        k = self._used.get((grid_id, category), 0)
        self._used[(grid_id, category)] = k + 1
        if k >= len(points):
            self.reused += 1
        lat, lon = points[k % len(points)]
        community = self.reference.community_of_grid(grid_id)
        return Building(
            building_id=f"{grid_id}-{category}-p{k:05d}",
            lat=lat,
            lon=lon,
            address=f"{community.name_en}, place {k} ({category})",
        )


def building(reference: ReferenceData, grid_id: str, number: int) -> Building:
    """Building ``number`` of a grid: a stable position inside the grid's cell (4 x 3 lattice)."""
    community = reference.community_of_grid(grid_id)
    lat0, lon0, half_lat, half_lon = grid_cell(reference, grid_id)
    digest = hashlib.blake2b(f"{grid_id}/{number}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest[:4], "big") / 2**32
    v = int.from_bytes(digest[4:], "big") / 2**32
    lat = round(lat0 + (2 * u - 1) * half_lat, 6)
    lon = round(lon0 + (2 * v - 1) * half_lon, 6)
    return Building(
        building_id=f"{grid_id}-b{number:04d}",
        lat=lat,
        lon=lon,
        address=f"{community.name_en}, building {number}",
    )


DESCRIPTIONS: dict[str, str] = {
    "locked_rooftop_door": "Rooftop escape door locked with a padlock",
    "blocked_fire_passage": "Stairwell blocked with furniture and boxes",
    "ebike_indoor_charging": "E-bikes charging in the stairwell overnight",
    "direct_vent_water_heater": "Direct-vent gas water heater in a rental flat bathroom",
    "three_in_one_premises": "Ground-floor shop where the owners also sleep and store goods",
    "group_rental_fire_hazard": "Flat split into eight rooms for rent, one exit",
    "electrical_fire_hazard": "Extension leads daisy-chained along the corridor",
    "fire_equipment_missing": "Fire extinguishers expired, hose reel missing",
    "sporadic_construction_works": "Renovation works without a safety notice or fencing",
    "public_security_hazard": "Premises suspected of unlicensed gambling",
    "gas_leak": "Smell of gas near the meter box",
    "road_hazard": "Manhole cover missing on the side road",
    "illegal_structure": "New rooftop shed built without permit",
    "other": "Loose advertising board above the entrance",
}


# ---------------------------------------------------------------- behaviour


@dataclass(frozen=True)
class BehaviourMix:
    """Shares of what reporters and departments do (each a probability in 0..1)."""

    on_site: float = 0.12
    """Fixed on the spot after the grid member's persuasion."""
    batch_share: float = 0.3
    """Share of reports sent as offline batches."""
    batch_min: int = 5
    batch_max: int = 60
    acknowledge_on_time: float = 0.78
    acknowledge_late: float = 0.12
    """Late: acknowledged only in a later round (never is the rest)."""
    returns: float = 0.05
    """Returned by the department as not its own."""
    verification_fails: float = 0.15
    relapse: float = 0.10
    """Closed hazards reported again at the same building."""
    relapse_again: float = 0.5
    """Closed relapses reported again at the same building (a chronic place: a relapse hotspot);
    only the demo plays this second wave."""
    urgent: float = 0.05
    distinct: bool = False
    """Every report a new hazard that reaches a department: a place of its own for its category (no
    duplicate to link), never fixed on the spot, and only categories with a routing rule in the grid."""


@dataclass(frozen=True)
class DepartmentAction:
    """What a department does with one dispatch."""

    acknowledge: Literal["on_time", "late", "never"]
    returns: bool


def department_action(rng: random.Random, mix: BehaviourMix) -> DepartmentAction:
    """Draw a department's behaviour for one dispatch."""
    if rng.random() < mix.returns:
        return DepartmentAction(acknowledge="never", returns=True)
    point = rng.random()
    if point < mix.acknowledge_on_time:
        return DepartmentAction(acknowledge="on_time", returns=False)
    if point < mix.acknowledge_on_time + mix.acknowledge_late:
        return DepartmentAction(acknowledge="late", returns=False)
    return DepartmentAction(acknowledge="never", returns=False)


# ---------------------------------------------------------------- reports and the schedule


@dataclass(frozen=True)
class PlannedReport:
    """One report to send: its body and who sends it."""

    body: dict[str, Any]
    reporter: str
    grid_id: str
    category: str
    on_site: bool
    building_id: str


@dataclass(frozen=True)
class Submission:
    """One HTTP request in the plan: a single report or an offline batch, with its offset in seconds."""

    at: float
    reports: tuple[PlannedReport, ...]
    batch: bool


class ReportPlanner:
    """Makes report bodies from the reference data and a seeded random source."""

    def __init__(
        self,
        reference: ReferenceData,
        reporters: Sequence[Principal],
        *,
        rng: random.Random,
        behaviour: BehaviourMix = BehaviourMix(),
        buildings_per_grid: int = 3000,
        clock: Any = None,
    ) -> None:
        """Reporters must be bound to grids; reports only go to grids that have one."""
        self.reference = reference
        self.mix = CategoryMix(reference)
        self.rng = rng
        self.behaviour = behaviour
        self.buildings_per_grid = buildings_per_grid
        self._clock = clock or (lambda: datetime.now(UTC))
        self.by_grid: dict[str, list[Principal]] = {}
        for p in reporters:
            if p.role == "reporter" and p.grid_id:
                self.by_grid.setdefault(p.grid_id, []).append(p)
        if not self.by_grid:
            raise ValueError("no reporter bound to a grid among the principals")
        self.grids = sorted(self.by_grid)
        self.places = DistinctPlaces(reference) if behaviour.distinct else None
        # The categories a department takes in each grid (the distinct mix sends no report to the
        # operators' queue).
        self._routed: dict[str, frozenset[str]] = {}

    def routed_categories(self, grid_id: str) -> frozenset[str]:
        """Categories with a routing rule for the grid."""
        found = self._routed.get(grid_id)
        if found is None:
            found = frozenset(
                c.code
                for c in self.reference.categories
                if self.reference.route(c.code, grid_id=grid_id) is not None
            )
            self._routed[grid_id] = found
        return found

    def _distinct_place(
        self, rng: random.Random, grid_id: str, category: str | None, *, grid_pinned: bool
    ) -> tuple[str, str, Building]:
        """A grid, category and place for a report of the distinct mix (pinned ones kept: a batch is
        one grid member's patrol, so it stays in its grid)."""
        assert self.places is not None
        for _ in range(200):
            pick = category or self.mix.pick(rng)
            if pick in self.routed_categories(grid_id) and self.places.has_room(grid_id, pick):
                return grid_id, pick, self.places.take(grid_id, pick)
            if not grid_pinned:
                grid_id = rng.choice(self.grids)
        # Everything drawn is full: a routed category with room (in any grid unless pinned), else reuse.
        for grid in [grid_id] if grid_pinned else self.grids:
            for code in sorted(self.routed_categories(grid)):
                if self.places.has_room(grid, code):
                    return grid, code, self.places.take(grid, code)
        pick = category or self.mix.pick(rng)
        return grid_id, pick, self.places.take(grid_id, pick)

    def now(self) -> datetime:
        """The planner's clock (aware)."""
        moment: datetime = self._clock()
        return moment

    def report(
        self,
        *,
        grid_id: str | None = None,
        category: str | None = None,
        building_number: int | None = None,
        on_site: bool | None = None,
        observed_at: datetime | None = None,
    ) -> PlannedReport:
        """One realistic report (fields may be pinned, e.g. for a relapse at the same building).

        Seen 1 to 240 minutes before it is sent, unless ``observed_at`` says when (a relapse is
        seen after the closure it relapses from, or it is no relapse).
        """
        rng = self.rng
        grid_pinned = grid_id is not None
        grid_id = grid_id or rng.choice(self.grids)
        if self.places is not None and building_number is None:
            grid_id, category, place = self._distinct_place(rng, grid_id, category, grid_pinned=grid_pinned)
        else:
            category = category or self.mix.pick(rng)
            number = (
                building_number if building_number is not None else rng.randrange(1, self.buildings_per_grid)
            )
            place = building(self.reference, grid_id, number)
        reporter = rng.choice(self.by_grid[grid_id])
        now = self._clock()
        if on_site is not None:
            fixed = on_site
        else:
            fixed = not self.behaviour.distinct and rng.random() < self.behaviour.on_site
        body: dict[str, Any] = {
            "report_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "category": category,
            "description": f"{DESCRIPTIONS.get(category, 'Hazard')} ({place.address})",
            "location": {
                "lat": place.lat,
                "lon": place.lon,
                "address": place.address,
                "building_id": place.building_id,
            },
            "grid_id": grid_id,
            "observed_at": (observed_at or now - timedelta(minutes=rng.randint(1, 240))).isoformat(),
            "photos": [f"https://img.example.org/{grid_id}/{uuid.UUID(int=rng.getrandbits(128)).hex}.jpg"],
            "rectified_on_site": fixed,
        }
        return PlannedReport(
            body=body,
            reporter=reporter.principal,
            grid_id=grid_id,
            category=category,
            on_site=fixed,
            building_id=place.building_id,
        )


def batch_probability(behaviour: BehaviourMix) -> float:
    """Chance that a submission is a batch, so that ``batch_share`` of all reports come in batches."""
    share = behaviour.batch_share
    if share <= 0:
        return 0.0
    if share >= 1:
        return 1.0
    mean = (behaviour.batch_min + behaviour.batch_max) / 2
    return share / (mean * (1 - share) + share)


def submission_sizes(rng: random.Random, total: int, behaviour: BehaviourMix) -> list[int]:
    """Split ``total`` reports into singles and offline batches (sizes in order); sums to ``total``."""
    sizes: list[int] = []
    left = total
    while left > 0:
        if rng.random() < batch_probability(behaviour):
            size = min(left, rng.randint(behaviour.batch_min, behaviour.batch_max))
        else:
            size = 1
        sizes.append(size)
        left -= size
    return sizes


def schedule(sizes: Sequence[int], rate: float) -> list[float]:
    """Offsets (s) at which each submission is sent so that reports arrive at ``rate`` per second."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    offsets = []
    sent = 0
    for size in sizes:
        offsets.append(sent / rate)
        sent += size
    return offsets


# ---------------------------------------------------------------- results


@dataclass
class Accepted:
    """One report the API accepted (201/200) with client-side timestamps (unix seconds)."""

    report_id: str
    hazard_id: str
    grid_id: str
    category: str
    on_site: bool
    building_id: str
    duplicate_of: str | None
    scheduled_at: float
    sent_at: float
    accepted_at: float
    batch: bool


@dataclass
class RunResult:
    """What a run sent and what came back."""

    started_at: float = 0.0
    finished_at: float = 0.0
    offered: int = 0
    accepted: list[Accepted] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)

    def count(self, what: str, n: int = 1) -> None:
        """Count one behaviour step (acknowledged, returned, rectified ...)."""
        self.actions[what] = self.actions.get(what, 0) + n

    def summary(self) -> dict[str, Any]:
        """Totals for printing and JSON."""
        elapsed = max(1e-9, self.finished_at - self.started_at)
        latencies = sorted(a.accepted_at - a.scheduled_at for a in self.accepted)
        return {
            "offered": self.offered,
            "accepted": len(self.accepted),
            "rejected": self.rejected,
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "seconds": round(elapsed, 2),
            "accepted_per_s": round(len(self.accepted) / elapsed, 1),
            "http_accept_p50_ms": round(percentile(latencies, 50) * 1000, 1) if latencies else None,
            "http_accept_p99_ms": round(percentile(latencies, 99) * 1000, 1) if latencies else None,
            "actions": self.actions,
        }


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


# ---------------------------------------------------------------- the HTTP driver


def items_of(payload: Any, *keys: str) -> list[dict[str, Any]]:
    """The list inside a list response, whatever the envelope key (``items``, ``dispatches`` ...)."""
    if isinstance(payload, list):
        return [x for x in payload if isinstance(x, dict)]
    if isinstance(payload, dict):
        for key in (*keys, "items", "results", "data", "dispatches", "groups", "rows"):
            value = payload.get(key)
            if isinstance(value, list):
                return [x for x in value if isinstance(x, dict)]
    return []


class LoadGenerator:
    """Sends planned reports to intake and plays the departments and reporters afterwards."""

    def __init__(
        self,
        *,
        intake: str,
        principals: Sequence[Principal],
        reference: ReferenceData | None = None,
        dispatch: str | None = None,
        tracking: str | None = None,
        reporting: str | None = None,
        seed: int = 7,
        concurrency: int = 32,
        behaviour: BehaviourMix = BehaviourMix(),
        timeout_s: float = 30.0,
        attempts: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        """Bind to the services' base URLs and the principals to act as.

        A report that meets a transport error, a 5xx or a 429 is sent again (same ``report_id``,
        so at most once in effect) up to ``attempts`` times, ``backoff_s`` x attempt apart.
        """
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.urls = {"intake": intake, "dispatch": dispatch, "tracking": tracking, "reporting": reporting}
        self.reference = reference or load_reference_data()
        self.principals = list(principals)
        self.by_name = {p.principal: p for p in self.principals}
        self.departments = {p.department_id: p for p in self.principals if p.role == "department"}
        self.supervisor = next((p for p in self.principals if p.role == "supervisor"), None)
        self.rng = random.Random(seed)
        self.behaviour = behaviour
        self.planner = ReportPlanner(self.reference, self.principals, rng=self.rng, behaviour=behaviour)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.result = RunResult()
        self._pool: LeanPool | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._relapse_reports: set[str] = set()  # report ids of relapse reports sent

    # -- plans -----------------------------------------------------------------------------

    def plan(self, total: int, rate: float | None) -> list[Submission]:
        """Singles and batches for ``total`` reports; offsets follow ``rate`` (0 offsets for max)."""
        sizes = submission_sizes(self.rng, total, self.behaviour)
        offsets = schedule(sizes, rate) if rate else [0.0] * len(sizes)
        submissions = []
        for size, at in zip(sizes, offsets, strict=True):
            if size == 1:
                submissions.append(Submission(at=at, reports=(self.planner.report(),), batch=False))
            else:
                # A batch is one phone syncing: one reporter, one grid.
                grid = self.rng.choice(self.planner.grids)
                reports = tuple(self.planner.report(grid_id=grid) for _ in range(size))
                reporter = reports[0].reporter
                reports = tuple(
                    PlannedReport(r.body, reporter, r.grid_id, r.category, r.on_site, r.building_id)
                    for r in reports
                )
                submissions.append(Submission(at=at, reports=reports, batch=True))
        return submissions

    # -- sending reports --------------------------------------------------------------------

    async def send_reports(
        self, submissions: Sequence[Submission], *, rate: float | None, client: httpx.AsyncClient
    ) -> None:
        """Send every submission, at its offset when ``rate`` is set, with bounded concurrency."""
        result = self.result
        result.offered += sum(len(s.reports) for s in submissions)
        gate = asyncio.Semaphore(self.concurrency)
        start = time.time()
        if not result.started_at:
            result.started_at = start
        tasks: set[asyncio.Task[None]] = set()

        async def one(sub: Submission, scheduled: float) -> None:
            try:
                await self._submit(client, sub, scheduled)
            finally:
                gate.release()

        for sub in submissions:
            scheduled = start + sub.at if rate else time.time()
            if rate:
                delay = scheduled - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(one(sub, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        result.finished_at = time.time()

    def _intake_pool(self) -> LeanPool:
        # One pool per event loop (each run mode may run under its own asyncio.run).
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool_loop is not loop:
            self._pool = LeanPool(self.urls["intake"] or "", size=self.concurrency, timeout_s=self.timeout_s)
            self._pool_loop = loop
        return self._pool

    async def _submit(self, client: httpx.AsyncClient, sub: Submission, scheduled: float) -> None:
        """Send one submission to intake (on the lean client: httpx would cost ~1.3 ms CPU a request)."""
        reporter = self.by_name[sub.reports[0].reporter]
        pool = self._intake_pool()
        if sub.batch:
            path, body = "/api/v1/hazards/batch", json.dumps({"reports": [r.body for r in sub.reports]})
        else:
            path, body = "/api/v1/hazards", json.dumps(sub.reports[0].body)
        sent = time.time()
        for attempt in range(self.attempts):
            try:
                status, payload = await pool.post(path, body.encode(), reporter.token)
            except LeanError as exc:
                # Resending is safe: report_id is the idempotency key.
                self.result.errors.append(f"transport: {exc!r}")
                self.result.count("resent")
                await asyncio.sleep(self.backoff_s * (attempt + 1))
                continue
            if status >= 500 or status == 429:
                self.result.errors.append(f"{status}: {payload[:200].decode(errors='replace')}")
                self.result.count("resent")
                await asyncio.sleep(self.backoff_s * (attempt + 1))
                continue
            break
        else:
            self.result.rejected["gave_up"] = self.result.rejected.get("gave_up", 0) + len(sub.reports)
            return
        done = time.time()
        if sub.batch and status == 200:
            results = items_of(json.loads(payload), "results")
            for planned, item in zip(sub.reports, results, strict=False):
                self._record(planned, item, scheduled, sent, done, batch=True)
        elif status in (200, 201):
            self._record(sub.reports[0], json.loads(payload), scheduled, sent, done, batch=False)
        else:
            key = str(status)
            self.result.rejected[key] = self.result.rejected.get(key, 0) + len(sub.reports)
            if len(self.result.errors) < 50:
                self.result.errors.append(f"{status}: {payload[:300].decode(errors='replace')}")

    def _record(
        self,
        planned: PlannedReport,
        item: dict[str, Any],
        scheduled: float,
        sent: float,
        done: float,
        batch: bool,
    ) -> None:
        hazard_id = item.get("hazard_id")
        if not hazard_id:
            key = str((item.get("error") or {}).get("code", "item_error"))
            self.result.rejected[key] = self.result.rejected.get(key, 0) + 1
            if len(self.result.errors) < 50:
                self.result.errors.append(f"batch item: {json.dumps(item)[:300]}")
            return
        self.result.accepted.append(
            Accepted(
                report_id=planned.body["report_id"],
                hazard_id=str(hazard_id),
                grid_id=planned.grid_id,
                category=planned.category,
                on_site=planned.on_site,
                building_id=planned.building_id,
                duplicate_of=item.get("duplicate_of"),
                scheduled_at=scheduled,
                sent_at=sent,
                accepted_at=done,
                batch=batch,
            )
        )

    # -- modes -------------------------------------------------------------------------------

    async def run_rate(self, *, rate: float, duration_s: float) -> RunResult:
        """Offer ``rate`` reports per second for ``duration_s`` seconds."""
        submissions = self.plan(int(rate * duration_s), rate)
        async with self._client() as client:
            await self.send_reports(submissions, rate=rate, client=client)
        return self.result

    async def run_max(self, *, duration_s: float, chunk: int = 2000) -> RunResult:
        """Send as fast as the services accept for ``duration_s`` seconds."""
        deadline = time.time() + duration_s
        async with self._client() as client:
            while time.time() < deadline:
                await self.send_reports(self.plan(chunk, None), rate=None, client=client)
        return self.result

    def sent(self) -> int:
        """Reports answered so far (accepted, rejected or failed)."""
        r = self.result
        return len(r.accepted) + sum(r.rejected.values()) + len(r.errors)

    async def run_demo(
        self,
        *,
        count: int,
        rounds: int = 3,
        settle_s: float = 2.0,
        rate: float = 15.0,
        progress: Progress | None = None,
    ) -> RunResult:
        """A few hundred hazards, then departments and reporters act on them over a few rounds.

        ``progress`` counts the reports answered, then names each step of the behaviour.
        """
        progress = progress or Progress("demo load", total=count, unit="reports", stream=io.StringIO())

        def step(name: str) -> None:
            acted = sum(self.result.actions.values())
            progress.update(self.sent(), stage=f"{name}; {acted} actions so far")

        async with self._client() as client, progress.ticking(self.sent, period_s=0.2):
            step("sending reports")
            # Gently: the demo has few reporters and intake limits each reporter's request rate.
            await self.send_reports(self.plan(count, rate=rate), rate=rate, client=client)
            await asyncio.sleep(settle_s)
            for round_no in range(1, rounds + 1):
                step(f"departments act, round {round_no}/{rounds}")
                await self.play_departments(client, late_round=round_no >= 2)
                await asyncio.sleep(settle_s)
                step(f"rectification, round {round_no}/{rounds}")
                await self.play_rectification(client)
                await asyncio.sleep(settle_s)
                step(f"verification, round {round_no}/{rounds}")
                await self.play_verification(client)
                await asyncio.sleep(settle_s)
            step("relapses")
            await self.play_relapses(client)
            if self.behaviour.relapse_again > 0:
                # The relapses are handled like any hazard; at chronic places they come back again.
                await asyncio.sleep(settle_s)
                step("relapses handled: departments act")
                await self.play_departments(client, late_round=True)
                await asyncio.sleep(settle_s)
                step("relapses handled: rectification")
                await self.play_rectification(client)
                await asyncio.sleep(settle_s)
                step("relapses handled: verification")
                await self.play_verification(client)
                await asyncio.sleep(settle_s)
                step("chronic places relapse again")
                await self.play_relapses(client, again=True)
            step("done")
        return self.result

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        """httpx for the departments' and reporters' calls; the lean pool's connections closed after."""
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        try:
            async with httpx.AsyncClient(limits=limits, timeout=self.timeout_s) as client:
                yield client
        finally:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # -- departments, rectification, verification, relapses ----------------------------------

    def _decide(self, key: str) -> DepartmentAction:
        """The (stable) behaviour of a department towards one dispatch."""
        return department_action(random.Random(f"{key}"), self.behaviour)

    async def list_dispatches(
        self, client: httpx.AsyncClient, department: Principal, status: str
    ) -> list[dict[str, Any]]:
        """Every dispatch of a department in a status, page by page."""
        base = self.urls["dispatch"]
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            response = await client.get(
                f"{base}/api/v1/dispatches",
                params={"status": status, "limit": 500, "offset": offset},
                headers=department.headers,
            )
            if response.status_code != 200:
                self.result.errors.append(f"dispatches {response.status_code}: {response.text[:200]}")
                break
            payload = response.json()
            items.extend(items_of(payload, "dispatches"))
            offset = payload.get("next_offset") if isinstance(payload, dict) else None
        return items

    async def _each(self, items: Sequence[Any], act: Any) -> None:
        """Run ``act(item)`` for every item, ``concurrency`` at a time."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item: Any) -> None:
            async with gate:
                try:
                    await act(item)
                except httpx.HTTPError as exc:
                    self.result.errors.append(f"behaviour step: {exc!r}")

        await asyncio.gather(*(one(item) for item in items))

    async def play_departments(self, client: httpx.AsyncClient, *, late_round: bool) -> None:
        """Each department with a token reads its pending dispatches and acknowledges, returns or ignores."""
        base = self.urls["dispatch"]
        if not base:
            return
        for department in self.departments.values():

            async def act(item: dict[str, Any], department: Principal = department) -> None:
                dispatch_id = item.get("dispatch_id") or item.get("id")
                if not dispatch_id:
                    return
                action = self._decide(str(dispatch_id))
                if action.returns:
                    r = await client.post(
                        f"{base}/api/v1/dispatches/{dispatch_id}/return",
                        json={"reason": "Not our department: belongs to another office"},
                        headers=department.headers,
                    )
                    self.result.count(f"return_{r.status_code}")
                elif action.acknowledge == "on_time" or (action.acknowledge == "late" and late_round):
                    r = await client.post(
                        f"{base}/api/v1/dispatches/{dispatch_id}/acknowledge", headers=department.headers
                    )
                    self.result.count(f"acknowledge_{action.acknowledge}_{r.status_code}")

            await self._each(await self.list_dispatches(client, department, "pending"), act)

    async def play_rectification(self, client: httpx.AsyncClient) -> None:
        """Departments post rectification evidence for the acknowledged hazards they hold."""
        base_d, base_t = self.urls["dispatch"], self.urls["tracking"]
        if not base_d or not base_t:
            return
        for department in self.departments.values():

            async def act(item: dict[str, Any], department: Principal = department) -> None:
                hazard_id = item.get("hazard_id")
                if not hazard_id:
                    return
                case = await client.get(f"{base_t}/api/v1/hazards/{hazard_id}", headers=department.headers)
                if case.status_code != 200 or not _awaits_rectification(case.json()):
                    return
                r = await client.post(
                    f"{base_t}/api/v1/hazards/{hazard_id}/rectification",
                    json={"note": "Fixed and photographed", "photos": ["https://img.example.org/fixed.jpg"]},
                    headers=department.headers,
                )
                self.result.count(f"rectified_{r.status_code}")

            await self._each(await self.list_dispatches(client, department, "acknowledged"), act)

    def _reporter_of(self, grid_id: str) -> Principal | None:
        return next(iter(self.planner.by_grid.get(grid_id, ())), None)

    async def play_verification(self, client: httpx.AsyncClient) -> None:
        """Reporters verify rectified hazards in their grid; some verifications fail (rework)."""
        base = self.urls["tracking"]
        if not base:
            return

        async def act(accepted: Accepted) -> None:
            reporter = self._reporter_of(accepted.grid_id)
            if reporter is None:
                return
            case = await client.get(f"{base}/api/v1/hazards/{accepted.hazard_id}", headers=reporter.headers)
            if case.status_code != 200 or not _awaits_verification(case.json()):
                return
            fails = random.Random(f"verify/{accepted.hazard_id}/{_round(case.json())}").random() < (
                self.behaviour.verification_fails
            )
            r = await client.post(
                f"{base}/api/v1/hazards/{accepted.hazard_id}/verification",
                json={
                    "passed": not fails,
                    "note": "Still padlocked on the return visit" if fails else "Checked on a return visit",
                    "photos": [],
                },
                headers=reporter.headers,
            )
            self.result.count(f"verification_{'failed' if fails else 'passed'}_{r.status_code}")

        await self._each([a for a in self.result.accepted if not (a.on_site or a.duplicate_of)], act)

    async def play_relapses(self, client: httpx.AsyncClient, *, again: bool = False) -> None:
        """Some closed hazards come back: a new report of the same category at the same building.

        First wave: ``behaviour.relapse`` of the closed hazards (that many, drawn at random, so a
        demo of a few hundred shows the claimed rate rather than a sampling accident). ``again``:
        only the relapses of earlier waves, ``behaviour.relapse_again`` of those closed (chronic
        places). Each relapse is seen after the closure it relapses from.
        """
        base = self.urls["tracking"]
        if not base:
            return
        share = self.behaviour.relapse_again if again else self.behaviour.relapse
        closed: list[tuple[Accepted, dict[str, Any]]] = []

        async def look(accepted: Accepted) -> None:
            reporter = self._reporter_of(accepted.grid_id)
            if reporter is None:
                return
            case = await client.get(f"{base}/api/v1/hazards/{accepted.hazard_id}", headers=reporter.headers)
            if case.status_code == 200 and _state(case.json()) == "closed":
                closed.append((accepted, case.json()))

        await self._each(
            [
                a
                for a in self.result.accepted
                if not a.duplicate_of and (a.report_id in self._relapse_reports) == again
            ],
            look,
        )
        closed.sort(key=lambda pair: pair[0].report_id)  # the draw must not depend on answer order
        candidates = self.rng.sample(closed, round(share * len(closed)))
        relapses = [
            self.planner.report(
                grid_id=accepted.grid_id,
                category=accepted.category,
                building_number=int(accepted.building_id.rsplit("-b", 1)[1]),
                on_site=False,
                observed_at=relapse_seen_at(case, now=self.planner.now(), rng=self.rng),
            )
            for accepted, case in candidates
        ]
        submissions = [Submission(at=0.0, reports=(r,), batch=False) for r in relapses]
        self._relapse_reports.update(r.body["report_id"] for r in relapses)
        self.result.count("relapse_reports_again" if again else "relapse_reports", len(submissions))
        await self.send_reports(submissions, rate=None, client=client)


def relapse_seen_at(case: dict[str, Any], *, now: datetime, rng: random.Random) -> datetime:
    """When a relapse of a closed case is seen: after its closure, at most now.

    Tracking counts a report as a relapse only when it was observed after the closure; an
    offline report observed before it is no relapse. So the moment is drawn between the closure
    (tracking's ``closed.at``; now if it is missing or ahead of this clock) and now.
    """
    closed = (case.get("closed") or {}).get("at")
    closed_at = datetime.fromisoformat(closed) if isinstance(closed, str) else now
    if closed_at >= now:
        return now
    return closed_at + (now - closed_at) * rng.uniform(0.05, 1.0)


def _state(case: dict[str, Any]) -> str:
    return str(case.get("state") or case.get("status") or "").lower()


def _round(case: dict[str, Any]) -> int:
    value = case.get("round") or case.get("rectification_round") or 1
    return int(value) if isinstance(value, int) else 1


def _awaits_rectification(case: dict[str, Any]) -> bool:
    return _state(case) in {"rectification_ordered", "rectifying", "ordered", "in_rectification", "rework"}


def _awaits_verification(case: dict[str, Any]) -> bool:
    return _state(case) in {"rectified", "awaiting_verification", "verifying"}


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.loadgen``."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--make-tokens", type=Path, metavar="DIR", help="write DIR/tokens.yaml + tokens.json and exit"
    )
    parser.add_argument("--tokens", type=Path, help="tokens.json from --make-tokens, or .run/demo-tokens.txt")
    parser.add_argument("--intake", help="intake base URL, e.g. http://127.0.0.1:8101")
    parser.add_argument("--dispatch", help="dispatch base URL")
    parser.add_argument("--tracking", help="tracking base URL")
    parser.add_argument("--reporting", help="reporting base URL")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--demo", action="store_true", help="a few hundred hazards with department behaviour")
    mode.add_argument("--rate", type=float, help="offered reports per second")
    mode.add_argument("--max", action="store_true", help="as fast as accepted")
    parser.add_argument("--count", type=int, default=300, help="hazards in --demo mode")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds for --rate / --max")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the accepted reports and summary as JSON here")
    return parser


async def _main(args: argparse.Namespace) -> int:
    if not args.intake or not args.tokens:
        print("--intake and --tokens are required", file=sys.stderr)
        return 2
    generator = LoadGenerator(
        intake=args.intake,
        dispatch=args.dispatch,
        tracking=args.tracking,
        reporting=args.reporting,
        principals=load_principals(args.tokens),
        seed=args.seed,
        concurrency=args.concurrency,
    )
    if args.demo:
        # A bar when stderr is a terminal, a line every 5 s otherwise (the local runner's log).
        progress = Progress("demo load", total=args.count, unit="reports", interval_s=5.0)
        result = await generator.run_demo(count=args.count, progress=progress)
    elif args.max:
        result = await generator.run_max(duration_s=args.duration)
    else:
        result = await generator.run_rate(rate=args.rate or 50.0, duration_s=args.duration)
    summary = result.summary()
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "accepted": [asdict(a) for a in result.accepted]}, indent=None)
        )
    return 0 if result.accepted else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.make_tokens:
        hashed, plain = write_token_files(make_principals(load_reference_data()), args.make_tokens)
        print(f"wrote {hashed} (for <SVC>__AUTH__TOKENS_FILE) and {plain} (for --tokens)")
        return 0
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
