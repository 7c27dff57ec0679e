"""Runtime administration applied in place: tokens (bootstrap + database - denied) and reference overlay."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.admin_sync import AdminSnapshot, overlay
from shared.auth import Principal, TokenRegistry, hash_token
from shared.reference import load_reference_data
from shared.settings import TokenEntry


def registry() -> TokenRegistry:
    return TokenRegistry(
        [
            TokenEntry(token_sha256=hash_token("file-op"), principal="op-1", role="operator"),
            TokenEntry(
                token_sha256=hash_token("file-fire"),
                principal="dept-fire",
                role="department",
                department_id="fire",
            ),
        ]
    )


def snapshot(**changes: object) -> AdminSnapshot:
    base: dict[str, object] = {
        "version": 1,
        "tokens": {},
        "denied": frozenset(),
        "departments": [],
        "routing_rules": None,
        "campaigns": [],
    }
    base.update(changes)
    return AdminSnapshot(**base)  # type: ignore[arg-type]


def test_database_tokens_add_to_the_file_and_denied_hashes_are_refused_in_place() -> None:
    tokens = registry()
    held_elsewhere = tokens  # handlers and apps keep this very object
    bm = Principal("bm-1", "reporter", "liuyue-01", None, "building_manager", ("b7",))
    tokens.refresh({hash_token("db-bm"): bm}, frozenset({hash_token("file-fire")}))
    assert held_elsewhere.authenticate("db-bm") == bm
    assert held_elsewhere.authenticate("file-fire") is None
    assert held_elsewhere.authenticate("file-op") == Principal("op-1", "operator")
    assert tokens.base_hashes("dept-fire") == [hash_token("file-fire")]
    # A later snapshot without the database token and the denial: back to the file alone.
    tokens.refresh({}, frozenset())
    assert tokens.authenticate("db-bm") is None
    assert tokens.authenticate("file-fire") is not None


def test_overlay_adds_renames_and_deletes_departments_replaces_rules_and_campaigns() -> None:
    base = load_reference_data()
    live = base.model_copy()
    rule = {"id": "r-gas-hazmat", "category": "gas_leak", "department_id": "hazmat"}
    spring = next(c for c in base.campaigns if c.id == "spring-fire-2026")
    snap = snapshot(
        departments=[
            {"id": "hazmat", "name_en": "Hazmat", "name_zh": "危化品", "contacts": [], "deleted_at": None},
            {"id": "fire", "name_en": "Fire brigade", "name_zh": "消防", "contacts": [], "deleted_at": None},
            {
                "id": "roads",
                "name_en": "Roads",
                "name_zh": "道路",
                "contacts": [],
                "deleted_at": datetime.now(UTC),
            },
        ],
        routing_rules=[rule],
        campaigns=[{**spring.model_dump(mode="json"), "targets": {"found": 1}, "_ended_at": None}],
    )
    live.refresh(**overlay(base, snap))
    assert live.department("hazmat").name_zh == "危化品"
    assert live.department("fire").name_en == "Fire brigade"
    assert "roads" not in {d.id for d in live.departments}
    routed = live.route("gas_leak")
    assert routed is not None
    assert (routed.id, routed.department_id) == ("r-gas-hazmat", "hazmat")
    assert live.route("locked_rooftop_door") is None  # version 1 has one rule only
    assert next(c for c in live.campaigns if c.id == "spring-fire-2026").targets.found == 1
    assert len(live.campaigns) == len(base.campaigns)
    # The files' data is untouched: a later overlay starts from it again.
    assert base.department("fire").name_en != "Fire brigade"
    live.refresh(**overlay(base, snapshot()))
    assert live.routing_rules == base.routing_rules


def test_a_bad_stored_row_is_skipped_not_fatal() -> None:
    base = load_reference_data()
    snap = snapshot(
        routing_rules=[{"id": "BAD ID", "category": "gas_leak", "department_id": "gas"}],
        campaigns=[{"id": "c-x", "name_en": "x"}],
    )
    parts = overlay(base, snap)
    assert parts["routing_rules"] == base.routing_rules
    assert {c.id for c in parts["campaigns"]} == {c.id for c in base.campaigns}
