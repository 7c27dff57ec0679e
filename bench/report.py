"""The benchmark report: one Markdown page and one JSON file under ``bench/results/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import idle, pattern_floor, raw_ceiling

RESULTS = Path(__file__).resolve().parent / "results"

NOISE_NOTE = (
    "Figures come from one run on one shared 2-core machine; other work on the machine moves them. "
    "Re-run `make bench` on a quiet machine before quoting them as capacity."
)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float | int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _pattern_floor_lines(floor: dict[str, Any] | None) -> list[str]:
    if not floor:
        return []
    return [
        "## The reliability patterns alone (same broker and database, handlers that do nothing)",
        "",
        f"`bench.pattern_floor`: {floor['consume']['events']:,} events on the topic, applied with the services' "
        "own consumer (batch subscriber, parse, inbox insert, one transaction and offset commit per batch) "
        "and a handler that does nothing; then again with a handler that publishes one event for each "
        "(outbox insert, relay, publish, delete). CPU per event, from the first batch committed to the last.",
        "",
        pattern_floor.table(floor),
        "",
    ]


def _distinct_mix_lines(t: dict[str, Any], d: dict[str, Any] | None) -> list[str]:
    """The second mix beside the first: every report distinct and dispatched."""
    if not d:
        return []
    a, b = t["accounting"], d["accounting"]
    cpu_a, cpu_b = t.get("cpu_ms_per_hazard") or {}, d.get("cpu_ms_per_hazard") or {}
    work_a, work_b = t.get("work_per_hazard") or {}, d.get("work_per_hazard") or {}
    rows = [
        ("hazards accepted", _fmt(t["accepted"]), _fmt(d["accepted"])),
        (
            "**end-to-end hazards/s**",
            f"**{_fmt(t['end_to_end_hazards_per_s'])}**",
            f"**{_fmt(d['end_to_end_hazards_per_s'])}**",
        ),
        ("dispatched", _fmt(a["dispatched"]), _fmt(b["dispatched"])),
        ("duplicates linked", _fmt(a["duplicates"]), _fmt(b["duplicates"])),
        ("fixed on site", _fmt(a["rectified_on_site"]), _fmt(b["rectified_on_site"])),
        ("referred to operators", _fmt(a["referred_to_operators"]), _fmt(b["referred_to_operators"])),
        ("dispatched twice", _fmt(a["dispatched_twice"]), _fmt(b["dispatched_twice"])),
        ("reporting counted", _fmt(t["reporting_counted"]), _fmt(d["reporting_counted"])),
    ]
    rows += [
        (f"CPU ms per hazard: {name}", f"{cpu_a.get(name, 0):.3f}", f"{ms:.3f}")
        for name, ms in cpu_b.items()
        if name != "total"
    ]
    rows += [
        (
            "**CPU ms per hazard: total**",
            f"**{cpu_a.get('total', 0):.3f}**",
            f"**{cpu_b.get('total', 0):.3f}**",
        ),
        (
            "CPU-bound hazards/s without the load generator",
            _fmt(t.get("cpu_bound_hazards_per_s")),
            _fmt(d.get("cpu_bound_hazards_per_s")),
        ),
        ("rows written per hazard", _fmt(work_a.get("rows_written")), _fmt(work_b.get("rows_written"))),
        ("events applied per hazard", _fmt(work_a.get("events_applied")), _fmt(work_b.get("events_applied"))),
        (
            "events published per hazard",
            _fmt(work_a.get("events_published")),
            _fmt(work_b.get("events_published")),
        ),
    ]
    problems = b["problems"]
    return [
        "",
        "### The second mix: every report distinct and dispatched",
        "",
        f"The same throughput phase again for {_fmt(d['duration_s'], ' s')}, with every report a new hazard at a "
        "place of its own for its category (no duplicate to link), none fixed on the spot, and only "
        "categories a department takes in the grid: every hazard reaches a department."
        + (
            f" {d['places_reused']:,} reports had to reuse a place (the lattice of distinct places was exhausted)."
            if d.get("places_reused")
            else ""
        ),
        "",
        "| what | realistic mix | distinct mix |",
        "| --- | ---: | ---: |",
        *[f"| {label} | {x} | {y} |" for label, x, y in rows],
        "",
        "Problems (distinct mix): "
        + ("; ".join(problems) if problems else "none — every accepted hazard is accounted for."),
    ]


def rows_by_table_lines(t: dict[str, Any], d: dict[str, Any] | None) -> list[str]:
    """Rows written per hazard by table, both mixes side by side (``work_per_hazard.rows_written_by_table``)."""
    mixes = [("realistic", t)] + ([("distinct", d)] if d else [])
    by_mix = {
        name: {
            row["table"]: row
            for row in (phase.get("work_per_hazard") or {}).get("rows_written_by_table") or []
        }
        for name, phase in mixes
    }
    if not any(by_mix.values()):
        return []
    tables = sorted(
        {table for rows in by_mix.values() for table in rows},
        key=lambda table: -max(rows.get(table, {}).get("total", 0.0) for rows in by_mix.values()),
    )
    header = " | ".join(f"{name}: ins / upd (HOT) / del | {name}: total" for name, _ in mixes)
    lines = [
        "",
        "### Rows written per hazard by table (throughput phases)",
        "",
        "`pg_stat_user_tables` before and after each throughput phase (partitions counted in their root "
        "table), per accepted hazard; the cluster-wide figure above also counts the catalogs.",
        "",
        f"| table | {header} |",
        "| --- |" + " ---: | ---: |" * len(mixes),
    ]

    def cells(row: dict[str, Any] | None) -> str:
        if row is None:
            return " | "
        return (
            f"{row['inserted']:.2f} / {row['updated']:.2f} ({row['hot_updated']:.2f}) / {row['deleted']:.2f}"
            f" | {row['total']:.2f}"
        )

    for table in tables:
        lines.append(f"| {table} | " + " | ".join(cells(by_mix[name].get(table)) for name, _ in mixes) + " |")
    totals = " | ".join(f" | **{sum(r['total'] for r in by_mix[name].values()):.2f}**" for name, _ in mixes)
    lines.append(f"| **all tables** | {totals} |")
    return lines


def latency_series_lines(lat: dict[str, Any]) -> list[str]:
    """The latency phase by window of accept time: dispatch's latencies and the CPU."""
    series = lat.get("series") or []
    if not series:
        return []
    lines = [
        "",
        f"### Latency by {lat.get('series_window_s', 5)} s window of accept time",
        "",
        "Hazards accepted in each window: accepted → `hazard.dispatched` on the topic, and "
        "`hazard.reported` on the topic → decided by dispatch (fetched and applied); CPU % of one core of "
        "the broker, PostgreSQL and dispatch over the window.",
        "",
        "| window | accepted | dispatched n | → dispatched p50 | p99 | decided p50 | p99 | broker CPU | PostgreSQL CPU | dispatch CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in series:
        a, b, cpu = (
            row["accepted_to_dispatched"],
            row["reported_to_dispatch_decided"],
            row.get("cpu_pct") or {},
        )
        lines.append(
            f"| {row['t_s']:g} s | {row['accepted']:,} | {a.get('n', 0):,} | {_fmt(a.get('p50_ms'), ' ms')} | "
            f"{_fmt(a.get('p99_ms'), ' ms')} | {_fmt(b.get('p50_ms'), ' ms')} | {_fmt(b.get('p99_ms'), ' ms')} | "
            f"{_fmt(cpu.get('broker'), '%')} | {_fmt(cpu.get('postgresql'), '%')} | {_fmt(cpu.get('dispatch'), '%')} |"
        )
    by_second = lat.get("series_1s") or []
    if by_second:
        p99s = ", ".join(_fmt(row["accepted_to_dispatched"].get("p99_ms")) for row in by_second[:10])
        lines += [
            "",
            f"Accepted → `hazard.dispatched` p99 by second of the first 10 s (ms): {p99s}.",
        ]
    return lines


def end_to_end_section(e2e: dict[str, Any]) -> list[str]:
    """Markdown lines for the end-to-end figures."""
    t, lat, acc = e2e["throughput"], e2e["latency"], e2e["throughput"]["accounting"]
    lines = [
        "## Raw ceiling (same broker and database, no services)",
        "",
        raw_ceiling.table(e2e["raw_ceiling"]),
        "",
        *_pattern_floor_lines(e2e.get("pattern_floor")),
        "## End to end: intake → dispatch → tracking → reporting",
        "",
        "| what | figure |",
        "| --- | ---: |",
        f"| offered for | {_fmt(t['duration_s'], ' s')} (max throughput; {int(t['mix']['batch_share'] * 100)}% of reports in offline batches of {t['mix']['batch_sizes'][0]}-{t['mix']['batch_sizes'][1]}) |",
        f"| hazards accepted by intake | {_fmt(t['accepted'])} |",
        f"| intake accept rate | {_fmt(t['intake_accepted_per_s'], ' /s')} |",
        f"| **end-to-end hazards/s** (first send → last hazard decided by dispatch and counted by reporting) | **{_fmt(t['end_to_end_hazards_per_s'])}** |",
        f"| end-to-end time | {_fmt(t['end_to_end_seconds'], ' s')} |",
        f"| ratio to Kafka produce+consume ceiling | {_fmt(e2e['ratio_to_raw_ceiling'].get('vs_kafka_produce_and_consume'))} |",
        f"| ratio to PostgreSQL batched-insert ceiling | {_fmt(e2e['ratio_to_raw_ceiling'].get('vs_postgres_batched_insert'))} |",
        "",
        "Accounting (from the lifecycle topic and reporting's API):",
        "",
        "| accepted | reported events | dispatched | duplicates linked | fixed on site | referred to operators | dispatched twice | reporting counted |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {acc['accepted']:,} | {acc['reported_events']:,} | {acc['dispatched']:,} | {acc['duplicates']:,} | {acc['rectified_on_site']:,} | {acc['referred_to_operators']:,} | {acc['dispatched_twice']} | {_fmt(t['reporting_counted'])} |",
        "",
        "Problems: "
        + (
            "; ".join(acc["problems"])
            if acc["problems"]
            else "none — every accepted hazard is accounted for."
        ),
        "",
    ]
    cpu = t.get("cpu_ms_per_hazard") or {}
    if cpu:
        lines += [
            "Where the CPU went during the throughput phase (user + system CPU ms per accepted hazard, by "
            "process; PostgreSQL and the broker include their children). Their sum bounds the rate on "
            "this machine whatever the scheduling: cores × 1000 / ms per hazard.",
            "",
            "| part | CPU ms per hazard |",
            "| --- | ---: |",
        ]
        lines += [f"| {name} | {ms:.3f} |" for name, ms in cpu.items() if name != "total"]
        lines += [
            f"| **total** | **{cpu['total']:.3f}** |",
            "",
            f"CPU-bound ceiling of the system without the load generator: "
            f"**{_fmt(t.get('cpu_bound_hazards_per_s'))} hazards/s**.",
        ]
    work, floor = t.get("work_per_hazard"), t.get("infrastructure_floor")
    if work and floor:
        lines += [
            "",
            f"Work per hazard: {work['records_produced']} records produced on the lifecycle topic, each "
            f"fetched by {work['consumer_groups']} consumer groups, and {work['rows_written']} rows written "
            "(inserted, updated or deleted) in PostgreSQL. Priced at the raw ceiling above (each ceiling is "
            "the whole machine doing only that), the broker and database work alone takes "
            f"{floor['machine_ms_per_hazard']} machine-ms per hazard: at most "
            f"**{_fmt(floor['hazards_per_s'])} hazards/s** even if the services' own code cost nothing.",
        ]
    share = t.get("patterns_share")
    if work and share:
        lines += [
            "",
            f"The reliability patterns alone (section above) take {share['cpu_ms_per_applied_event']} CPU-ms "
            f"per event applied and {share['cpu_ms_per_published_event']} per event published. This run "
            f"applied {work['events_applied']} events per hazard (summed over the services) and published "
            f"{work['events_published']}: **{share['cpu_ms_per_hazard']} CPU-ms per hazard** before any "
            "service does its own work (intake's HTTP handling and the events a consumer skips by type "
            "left out).",
        ]
    lines += _distinct_mix_lines(t, e2e.get("throughput_distinct"))
    lines += rows_by_table_lines(t, e2e.get("throughput_distinct"))
    lines += [
        "",
        f"## Latency at a fixed offered load of {_fmt(lat['offered_rate'])} reports/s for {_fmt(lat['duration_s'], ' s')}",
        "",
        f"Achieved {_fmt(lat['achieved_rate'])} reports/s; {lat['accepted']:,} accepted.",
        "",
        "| from → to | n | p50 | p99 | max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in (
        ("scheduled send → accepted (HTTP 201)", "http_accept"),
        ("accepted → `hazard.dispatched` on the topic", "accepted_to_dispatched"),
        (
            "… of which accepted → `hazard.reported` on the topic (intake's relay)",
            "accepted_to_reported_on_topic",
        ),
        (
            "… and `hazard.reported` → `hazard.dispatched` on the topic (dispatch)",
            "reported_on_topic_to_dispatched",
        ),
        (
            "… … of which fetched and decided by dispatch (to the event's `occurred_at`)",
            "reported_on_topic_to_dispatch_decided",
        ),
        (
            "… … and dispatch's outbox relay (decided → on the topic)",
            "dispatch_decided_to_dispatched_on_topic",
        ),
        ("accepted → counted by reporting", "accepted_to_reporting"),
        (
            f"accepted → `hazard.dispatched`, accepted after the first {_fmt(lat.get('warmup_s'), ' s')}",
            "accepted_to_dispatched_after_warmup",
        ),
        (
            f"accepted → counted by reporting, accepted after the first {_fmt(lat.get('warmup_s'), ' s')}",
            "accepted_to_reporting_after_warmup",
        ),
    ):
        row = lat.get(key)
        if row is None:
            continue
        lines.append(
            f"| {label} | {row.get('n', 0):,} | {_fmt(row.get('p50_ms'), ' ms')} | {_fmt(row.get('p99_ms'), ' ms')} | {_fmt(row.get('max_ms'), ' ms')} |"
        )
    lat_acc = lat["accounting"]
    lines += [
        "",
        f"Reporting is polled every {lat['reporting_poll_interval_s']} s and read by count (the k-th accepted "
        "report counts as visible once reporting counts k), so its figures carry up to one poll interval.",
        "The stack is idle before the phase, so each consumer starts in its idle fetch wait "
        "(`IDLE_FETCH_MAX_WAIT_MS`, 2 s), which the local broker holds to its end even when records "
        'arrive: the first records of the phase wait for it. The rows "accepted after the first ..." '
        "leave that wake out (Apache Kafka answers a waiting fetch as soon as a record arrives).",
        "Latency-phase problems: " + ("; ".join(lat_acc["problems"]) if lat_acc["problems"] else "none."),
        *latency_series_lines(lat),
        "",
        "## Resident memory at the end (VmRSS)",
        "",
        "| service | RSS |",
        "| --- | ---: |",
    ]
    for name, kib in e2e["rss_kib"].items():
        lines.append(f"| {name} | {_fmt(round(kib / 1024, 1) if kib else None, ' MiB')} |")
    return lines


def render(results: dict[str, Any], *, command: str) -> str:
    """The whole report as Markdown."""
    lines = [
        "# hazard-dispatch benchmark report",
        "",
        f"Command: `{command}`  ",
        f"Run at: {results.get('started_at', 'n/a')} UTC, {results.get('machine', {}).get('cpus', '?')} CPUs, "
        f"load average at start {results.get('machine', {}).get('load_avg_at_start', 'n/a')}",
        "",
        f"> {NOISE_NOTE}",
        "",
    ]
    if "end_to_end" in results:
        probe = results["end_to_end"].get("machine", {}).get("speed_probe_us_per_event_parse")
        if probe is not None:
            lines += [
                f"Machine speed at the start: parsing one event took {probe} µs (best of 5 × 5,000; "
                "lower is faster). The same code's CPU per hazard moves with it.",
                "",
            ]
        lines += end_to_end_section(results["end_to_end"])
    elif "raw_ceiling" in results:
        lines += ["## Raw ceiling", "", raw_ceiling.table(results["raw_ceiling"])]
    if "idle" in results:
        lines += ["", "## Idle cost (`python -m bench.idle`)", "", idle.table(results["idle"])]
    modules = results.get("modules") or {}
    if modules:
        lines += ["", "## Per-service benchmarks", ""]
        for name, outcome in modules.items():
            lines += [f"### `python -m bench.{name}` ({outcome['status']}, {outcome['seconds']} s)", ""]
            if outcome.get("stdout_tail"):
                lines += ["```", outcome["stdout_tail"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], *, command: str, name: str = "report") -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.json`` under bench/results/."""
    RESULTS.mkdir(exist_ok=True)
    md = RESULTS / f"{name}.md"
    js = RESULTS / f"{name}.json"
    md.write_text(render(results, command=command))
    js.write_text(json.dumps({"command": command, **results}, indent=1, default=str))
    return md, js
