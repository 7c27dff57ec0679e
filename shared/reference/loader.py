"""Read the reference-data YAML files, validate them and their cross-references, build `ReferenceData`."""

from __future__ import annotations

import itertools
import re
from collections.abc import Hashable, Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from yaml.constructor import ConstructorError

from shared.reference.errors import ReferenceDataError, plural
from shared.reference.models import (
    OPERATORS_QUEUE,
    WORKING_DAY_MINUTES_CONTEXT,
    Calendar,
    Campaign,
    Category,
    Department,
    EscalationStep,
    ReferenceData,
    RoutingRule,
    Street,
    Thresholds,
)

PACKAGED_DATA_DIR: Final = Path(__file__).resolve().parent / "data"
"""The default reference data shipped with the package."""

DEPARTMENTS: Final = "departments.yaml"
CATEGORIES: Final = "categories.yaml"
PLACES: Final = "places.yaml"
ROUTING: Final = "routing.yaml"
CAMPAIGNS: Final = "campaigns.yaml"
CALENDAR: Final = "calendar.yaml"
ESCALATION: Final = "escalation.yaml"
SETTINGS: Final = "settings.yaml"
FILES: Final = (DEPARTMENTS, CATEGORIES, PLACES, ROUTING, CAMPAIGNS, CALENDAR, ESCALATION, SETTINGS)

_FALLBACK_WORKING_DAY_MINUTES: Final = 8 * 60
_MAX_KNOWN_LISTED: Final = 12

# list key in a file -> (label of one entry, key holding the entry's id)
_ENTRY_LABELS: Final[dict[str, tuple[str, str | None]]] = {
    "departments": ("department", "id"),
    "categories": ("category", "code"),
    "communities": ("community", "id"),
    "grids": ("grid", "id"),
    "rules": ("rule", "id"),
    "campaigns": ("campaign", "id"),
    "holidays": ("holiday", "id"),
    "make_up_days": ("make-up day", "day"),
    "working_hours": ("working interval", None),
    "overdue_receipt": ("step", "level"),
    "area": ("area point", None),
}
_ENTRY_LINE = re.compile(r"^\s*(?:-\s*)?(?:\{\s*)?(?:id|code)\s*:\s*['\"]?([^'\",}\s]+)")

_Model = TypeVar("_Model", bound=BaseModel)


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _DepartmentsFile(_FileModel):
    departments: Annotated[tuple[Department, ...], Field(min_length=1)]


class _CategoriesFile(_FileModel):
    categories: Annotated[tuple[Category, ...], Field(min_length=1)]


class _PlacesFile(_FileModel):
    street: Street


class _RoutingFile(_FileModel):
    rules: tuple[RoutingRule, ...]


class _CampaignsFile(_FileModel):
    campaigns: tuple[Campaign, ...] = ()


class _EscalationFile(_FileModel):
    overdue_receipt: Annotated[tuple[EscalationStep, ...], Field(min_length=1)]


class _YamlLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys and reports impossible dates with their position."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Build a mapping, refusing a key given twice."""
        self.flatten_mapping(node)
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _construct_timestamp(loader: _YamlLoader, node: yaml.Node) -> Any:
    """Construct a YAML date/timestamp, turning an impossible date into a positioned YAML error."""
    assert isinstance(node, yaml.ScalarNode)
    try:
        return loader.construct_yaml_timestamp(node)
    except ValueError as exc:
        raise ConstructorError(None, None, f"invalid date {node.value!r}: {exc}", node.start_mark) from exc


_YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def load_reference_data(directory: Path | None = None) -> ReferenceData:
    """Load and validate the reference data in `directory` (None: packaged); raise ReferenceDataError."""
    root = PACKAGED_DATA_DIR if directory is None else Path(directory)
    if not root.is_dir():
        raise ReferenceDataError([f"{root}: not a directory"], root)
    problems: list[str] = []
    raw = {name: _read_yaml(root / name, problems) for name in FILES}

    calendar = _validate(Calendar, CALENDAR, raw, problems)
    per_day = calendar.working_day_minutes if calendar is not None else _FALLBACK_WORKING_DAY_MINUTES
    context = {WORKING_DAY_MINUTES_CONTEXT: per_day}
    departments = _validate(_DepartmentsFile, DEPARTMENTS, raw, problems)
    categories = _validate(_CategoriesFile, CATEGORIES, raw, problems, context)
    places = _validate(_PlacesFile, PLACES, raw, problems)
    routing = _validate(_RoutingFile, ROUTING, raw, problems)
    campaigns = _validate(_CampaignsFile, CAMPAIGNS, raw, problems)
    escalation = _validate(_EscalationFile, ESCALATION, raw, problems, context)
    thresholds = _validate(Thresholds, SETTINGS, raw, problems)

    if departments is not None:
        problems.extend(_check_departments(departments.departments))
    if categories is not None:
        known_departments = None if departments is None else [d.id for d in departments.departments]
        problems.extend(_check_categories(categories.categories, known_departments))
    if places is not None:
        problems.extend(_check_places(places.street))
    if routing is not None and categories is not None and departments is not None and places is not None:
        problems.extend(
            _check_routing(routing.rules, categories.categories, departments.departments, places.street)
        )
    if campaigns is not None and categories is not None:
        problems.extend(_check_campaigns(campaigns.campaigns, categories.categories))
    if escalation is not None:
        problems.extend(_check_escalation(escalation.overdue_receipt))

    if problems:
        raise ReferenceDataError(problems, root)
    # Every None above came with a recorded problem, so none is left here.
    assert departments is not None
    assert categories is not None
    assert places is not None
    assert routing is not None
    assert campaigns is not None
    assert escalation is not None
    assert calendar is not None
    assert thresholds is not None
    return ReferenceData(
        departments=departments.departments,
        categories=categories.categories,
        street=places.street,
        routing_rules=routing.rules,
        campaigns=campaigns.campaigns,
        escalation=escalation.overdue_receipt,
        calendar=calendar,
        thresholds=thresholds,
    )


def _read_yaml(path: Path, problems: list[str]) -> Any:
    """The parsed top-level mapping of one file, or None after recording why it cannot be had."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{name}: file not found")
        return None
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    except OSError as exc:
        problems.append(f"{name}: cannot read ({exc.strerror or exc})")
        return None
    try:
        data = yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        problems.append(_describe_yaml_error(name, text, exc))
        return None
    if not isinstance(data, dict):
        shape = "empty" if data is None else f"a {type(data).__name__}"
        problems.append(f"{name}: expected a mapping at the top level, the file is {shape}")
        return None
    return data


def _describe_yaml_error(name: str, text: str, exc: yaml.YAMLError) -> str:
    """One line naming the file, the nearest entry id above the error, the position and the problem."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"{name}: invalid YAML: {exc}"
    mark = exc.problem_mark
    entry = _entry_near_line(text, mark.line)
    where = f"{name}, near {entry}" if entry else name
    context = f" ({exc.context})" if exc.context else ""
    return f"{where}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"


def _entry_near_line(text: str, line: int) -> str | None:
    """The id or code of the last entry starting at or above 0-based `line`, quoted; None if none."""
    lines = text.splitlines()
    for number in range(min(line, len(lines) - 1), -1, -1):
        found = _ENTRY_LINE.match(lines[number])
        if found:
            return f"entry {found.group(1)!r}"
    return None


def _validate(
    model: type[_Model],
    name: str,
    raw: dict[str, Any],
    problems: list[str],
    context: dict[str, Any] | None = None,
) -> _Model | None:
    """Validate one file's data into `model`; on failure record one line per error and return None."""
    data = raw.get(name)
    if data is None:
        return None
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems.extend(_describe_validation_error(name, data, exc))
        return None


def _describe_validation_error(name: str, data: Any, exc: ValidationError) -> list[str]:
    """Turn pydantic errors into lines naming file, entry, field and problem."""
    lines: list[str] = []
    for error in exc.errors(include_url=False):
        entry, field = _locate(data, error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        kind = error["type"]
        if kind == "extra_forbidden":
            detail = f"unknown field {field!r}"
        elif kind == "missing":
            detail = f"missing field {field!r}"
        else:
            detail = f"field {field!r}: {message}" if field else message
            value = error.get("input")
            if isinstance(value, str | int | float | date) and kind not in {"value_error", "assertion_error"}:
                detail += f" (got {str(value)[:60]!r})"
        where = f"{name}, {entry}" if entry else name
        lines.extend(f"{where}: {part}" for part in detail.split("\n") if part)
    return lines


def _locate(data: Any, loc: Sequence[int | str]) -> tuple[str, str]:
    """Split a pydantic error location into an entry description and a dotted field path."""
    entries: list[str] = []
    fields: list[str] = []
    node = data
    previous: int | str | None = None
    for part in loc:
        label = _ENTRY_LABELS.get(previous) if isinstance(previous, str) else None
        child = _child(node, part)
        if isinstance(part, int) and label is not None:
            entries.append(_entry_label(label, part, child))
            fields = []
        else:
            fields.append(str(part))
        node = child
        previous = part
    return ", ".join(entries), ".".join(fields)


def _child(node: Any, part: int | str) -> Any:
    """The element of a raw YAML node at `part`, or None when absent."""
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _entry_label(label: tuple[str, str | None], index: int, element: Any) -> str:
    """`category 'gas_leak'`, `step level 2` or `working interval #2`."""
    kind, id_key = label
    ident = element.get(id_key) if isinstance(element, dict) and id_key is not None else None
    if ident is None:
        return f"{kind} #{index + 1}"
    if id_key == "level":
        return f"{kind} level {ident}"
    return f"{kind} '{ident}'"


def _known(ids: Iterable[str]) -> str:
    """A short, comma-separated list of known ids."""
    listed = list(ids)
    text = ", ".join(listed[:_MAX_KNOWN_LISTED])
    if len(listed) > _MAX_KNOWN_LISTED:
        text += f", ... ({len(listed)} in total)"
    return text


def _duplicates(file: str, kind: str, ids: Sequence[str]) -> list[str]:
    """One line per id that occurs more than once."""
    first: dict[str, int] = {}
    lines: list[str] = []
    for index, ident in enumerate(ids):
        if ident in first:
            lines.append(
                f"{file}, {kind} '{ident}': duplicate id (entries #{first[ident] + 1} and #{index + 1})"
            )
        else:
            first[ident] = index
    return lines


def _check_departments(departments: Sequence[Department]) -> list[str]:
    """Unique ids; the operators' queue is not a department."""
    lines = _duplicates(DEPARTMENTS, "department", [d.id for d in departments])
    lines.extend(
        f"{DEPARTMENTS}, department '{d.id}': '{OPERATORS_QUEUE}' is reserved for the operators' queue"
        for d in departments
        if d.id == OPERATORS_QUEUE
    )
    return lines


def _check_categories(categories: Sequence[Category], departments: Sequence[str] | None) -> list[str]:
    """Unique codes; each owning department exists."""
    lines = _duplicates(CATEGORIES, "category", [c.code for c in categories])
    if departments is not None:
        known = set(departments)
        lines.extend(
            f"{CATEGORIES}, category '{c.code}': unknown department '{c.department_id}'. "
            f"Known departments: {_known(departments)}"
            for c in categories
            if c.department_id is not None and c.department_id not in known
        )
    return lines


def _check_places(street: Street) -> list[str]:
    """Unique community and grid ids; boxes and grid centres inside the street and community."""
    lines = _duplicates(PLACES, "community", [c.id for c in street.communities])
    lines.extend(_duplicates(PLACES, "grid", [g.id for c in street.communities for g in c.grids]))
    for community in street.communities:
        for corner in community.bbox.corners():
            if not street.contains(corner.lat, corner.lon):
                lines.append(
                    f"{PLACES}, community '{community.id}': bbox corner ({corner.lat}, {corner.lon}) "
                    f"is outside street '{street.id}' area"
                )
                break
        for grid in community.grids:
            lat, lon = grid.center.lat, grid.center.lon
            if not street.contains(lat, lon):
                lines.append(
                    f"{PLACES}, grid '{grid.id}': center ({lat}, {lon}) is outside street '{street.id}' area"
                )
            elif not community.bbox.contains(lat, lon):
                lines.append(
                    f"{PLACES}, grid '{grid.id}': center ({lat}, {lon}) is outside community "
                    f"'{community.id}' bbox"
                )
    return lines


def _check_routing(
    rules: Sequence[RoutingRule],
    categories: Sequence[Category],
    departments: Sequence[Department],
    street: Street,
) -> list[str]:
    """Unique ids; known category, community, grid and department; grid inside community; no shadowed rule."""
    lines = _duplicates(ROUTING, "rule", [r.id for r in rules])
    category_codes = [c.code for c in categories]
    department_ids = [d.id for d in departments]
    community_ids = [c.id for c in street.communities]
    grid_community = {g.id: c.id for c in street.communities for g in c.grids}

    def unknown(rule: RoutingRule, kind: str, value: str, known: Iterable[str]) -> str:
        return f"{ROUTING}, rule '{rule.id}': unknown {kind} '{value}'. Known {plural(kind)}: {_known(known)}"

    valid: list[RoutingRule] = []
    for rule in rules:
        before = len(lines)
        if rule.category not in category_codes:
            lines.append(unknown(rule, "category", rule.category, category_codes))
        if rule.department_id not in department_ids:
            lines.append(unknown(rule, "department", rule.department_id, department_ids))
        if rule.community_id is not None and rule.community_id not in community_ids:
            lines.append(unknown(rule, "community", rule.community_id, community_ids))
        if rule.grid_id is not None:
            owner = grid_community.get(rule.grid_id)
            if owner is None:
                lines.append(unknown(rule, "grid", rule.grid_id, grid_community))
            elif rule.community_id is not None and rule.community_id != owner:
                lines.append(
                    f"{ROUTING}, rule '{rule.id}': grid '{rule.grid_id}' belongs to community '{owner}', "
                    f"not '{rule.community_id}'"
                )
        if len(lines) == before:
            valid.append(rule)
    lines.extend(_shadowed_rules(valid, grid_community))
    return lines


def _shadowed_rules(rules: Sequence[RoutingRule], grid_community: dict[str, str]) -> list[str]:
    """Rules that an earlier rule makes redundant, or overrides placed after their generic rule."""

    def scope(rule: RoutingRule) -> tuple[str | None, str | None]:
        community = grid_community.get(rule.grid_id) if rule.grid_id is not None else rule.community_id
        return community, rule.grid_id

    def covers(wide: tuple[str | None, str | None], narrow: tuple[str | None, str | None]) -> bool:
        return (wide[0] is None or wide[0] == narrow[0]) and (wide[1] is None or wide[1] == narrow[1])

    lines: list[str] = []
    for index, rule in enumerate(rules):
        mine = scope(rule)
        for earlier in rules[:index]:
            if earlier.category != rule.category:
                continue
            theirs = scope(earlier)
            if not covers(theirs, mine):
                continue
            if earlier.department_id == rule.department_id:
                lines.append(
                    f"{ROUTING}, rule '{rule.id}': never used, earlier rule '{earlier.id}' already sends "
                    f"this category and place to '{rule.department_id}'"
                )
                break
            if not covers(mine, theirs):
                lines.append(
                    f"{ROUTING}, rule '{rule.id}': more specific than the earlier rule '{earlier.id}', so it "
                    f"is reached only when '{earlier.department_id}' is excluded; put overrides before "
                    f"generic rules"
                )
                break
    return lines


def _check_campaigns(campaigns: Sequence[Campaign], categories: Sequence[Category]) -> list[str]:
    """Unique ids; every named category exists."""
    lines = _duplicates(CAMPAIGNS, "campaign", [c.id for c in campaigns])
    codes = [c.code for c in categories]
    for campaign in campaigns:
        lines.extend(
            f"{CAMPAIGNS}, campaign '{campaign.id}': unknown category '{code}'. "
            f"Known categories: {_known(codes)}"
            for code in campaign.categories
            if code not in codes
        )
    return lines


def _check_escalation(steps: Sequence[EscalationStep]) -> list[str]:
    """Levels strictly increasing, `after` non-decreasing and all in the same kind of time."""
    lines: list[str] = []
    for previous, step in itertools.pairwise(steps):
        where = f"{ESCALATION}, step level {step.level}"
        if step.level <= previous.level:
            lines.append(f"{where}: level must be greater than the previous step's level {previous.level}")
        if step.after.working_time != previous.after.working_time:
            lines.append(f"{where}: 'after' mixes working time and wall-clock time with the previous step")
        elif step.after.minutes < previous.after.minutes:
            lines.append(
                f"{where}: 'after' ({step.after.minutes} min) is earlier than the previous step's "
                f"({previous.after.minutes} min)"
            )
    return lines
