"""Tables of the reporting schema (owned by this service alone).

Facts keyed by natural ids (hazards, dispatches, relapses) are the projection; ``rollup``
is a daily summary of them per (day, department, community, category) kept for fast
period queries; ``rollup_changes`` holds the changes to it not yet folded in, and
``rollup_dirty`` lists days whose rollup must be recomputed from the facts (migrations, tools).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import inbox_table, outbox_table

SCHEMA = "reporting"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)

hazards = sa.Table(
    "hazards",
    metadata,
    sa.Column("hazard_id", sa.Uuid, primary_key=True),
    sa.Column("reported_at", sa.DateTime(timezone=True)),
    sa.Column("report_day", sa.Date),
    sa.Column("category", sa.Text),
    sa.Column("community_id", sa.Text),
    sa.Column("grid_id", sa.Text),
    sa.Column("street_id", sa.Text),
    sa.Column("place_key", sa.Text),
    sa.Column("campaign_ids", pg.ARRAY(sa.Text)),
    sa.Column("rectified_on_site", sa.Boolean),
    sa.Column("duplicate_of", sa.Uuid),
    sa.Column("department_id", sa.Text),
    sa.Column("department_at", sa.DateTime(timezone=True)),
    sa.Column("ordered_at", sa.DateTime(timezone=True)),
    sa.Column("order_round", sa.Integer),
    sa.Column("rectified_at", sa.DateTime(timezone=True)),
    sa.Column("rectification_overdue", sa.Boolean),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("closed_reason", sa.Text),
    # True once intake undid the duplicate link (the report was observed after the original closed).
    # The last two in migration order (0009, then 0010), so fresh and migrated tables have one order.
    sa.Column("unlinked", sa.Boolean),
    sa.Column("address", sa.Text),  # migration 0010
    # migration 0012 (#18): who reported, through what, and a notice handed out on the spot.
    sa.Column("reporter_type", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("notice_on_site", sa.Boolean),
    sa.Index("hazards_report_day", "report_day"),
    sa.Index("hazards_community_day", "community_id", "report_day"),
)

dispatches = sa.Table(
    "dispatches",
    metadata,
    sa.Column("dispatch_id", sa.Uuid, primary_key=True),
    sa.Column("hazard_id", sa.Uuid, nullable=False),
    sa.Column("department_id", sa.Text),
    sa.Column("dispatched_at", sa.DateTime(timezone=True)),
    sa.Column("dispatch_day", sa.Date),
    sa.Column("deadline", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.Column("previous_dispatch_id", sa.Uuid),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
    sa.Column("returned_at", sa.DateTime(timezone=True)),
    sa.Column("superseded_at", sa.DateTime(timezone=True)),
    # Copied from the hazard's report (see domain.PLACE_COLUMNS): dispatch figures need no join.
    sa.Column("community_id", sa.Text),
    sa.Column("grid_id", sa.Text),
    sa.Column("category", sa.Text),
    sa.Column("campaign_ids", pg.ARRAY(sa.Text)),
    # The receipt deadline as first frozen; ``deadline`` is the one in force (later once an
    # extension was approved). Migration 0011: NULL on rows applied before it (no extension then).
    sa.Column("original_deadline", sa.DateTime(timezone=True)),
    sa.Column("street_id", sa.Text),  # migration 0012 (#18), copied from the report like the above
    sa.Column("reporter_type", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("escalation_level", sa.Integer),  # migration 0012 (#18)
    sa.Index("dispatches_hazard", "hazard_id"),
    sa.Index("dispatches_day", "dispatch_day"),
    sa.Index("dispatches_community_day", "community_id", "dispatch_day"),
    sa.Index(
        "dispatches_open_unacknowledged",
        "deadline",
        postgresql_where=sa.text("acknowledged_at IS NULL AND returned_at IS NULL AND superseded_at IS NULL"),
    ),
    # Returns after receipt (退单 after 签收), counted per department by the summary (#21).
    sa.Index(
        "dispatches_returned_after_receipt",
        "dispatch_day",
        "department_id",
        postgresql_where=sa.text("acknowledged_at IS NOT NULL AND returned_at IS NOT NULL"),
    ),
    # Dispatches whose receipt deadline an approved extension moved (lateness against the original).
    sa.Index(
        "dispatches_extended",
        "dispatch_day",
        postgresql_where=sa.text("original_deadline < deadline"),
    ),
)

actions = sa.Table(
    "actions",
    metadata,
    # Urgings (督办) and deadline extension requests and decisions (延期申请), one row per event (#16).
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.Text),  # urged | extension_requested | extension_approved | extension_refused
    sa.Column("hazard_id", sa.Uuid),
    sa.Column("department_id", sa.Text),
    sa.Column("stage", sa.Text),  # receipt | rectification
    sa.Column("action_at", sa.DateTime(timezone=True)),
    sa.Column("action_day", sa.Date),
    sa.Index("actions_day", "action_day", "kind"),
)

relapses = sa.Table(
    "relapses",
    metadata,
    sa.Column("hazard_id", sa.Uuid, primary_key=True),
    sa.Column("original_hazard_id", sa.Uuid, nullable=False),
    sa.Column("relapsed_at", sa.DateTime(timezone=True)),
    sa.Column("relapse_day", sa.Date),
    sa.Column("place_key", sa.Text),
    sa.Column("original_department_id", sa.Text),
    sa.Column("days_since_closure", sa.Float),
    sa.Index("relapses_original", "original_hazard_id"),
    sa.Index("relapses_day", "relapse_day"),
)

_COUNTS = (
    "reported",
    "duplicates",
    "dispatched",
    "acknowledged",
    "acknowledged_late",
    "overdue_ended",
    "open_unacknowledged",
    "notices_issued",
    "rectified",
    "rectification_overdue",
    "closed",
    "relapsed",
    # migration 0012 (#18): the two kinds of rectification notice (notices_issued: either)
    "notices_on_site",
    "notices_ordered",
    # dispatches escalated (督办) and their escalations (every level counts one)
    "escalated",
    "escalations",
)

rollup = sa.Table(
    "rollup",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("department_id", sa.Text, primary_key=True),
    sa.Column("community_id", sa.Text, primary_key=True),
    sa.Column("category", sa.Text, primary_key=True),
    *(sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in _COUNTS),
    sa.Index("rollup_community_day", "community_id", "day"),
    sa.Index("rollup_category_day", "category", "day"),
)

rollup_groups = sa.Table(
    "rollup_groups",
    metadata,
    # grouping: department | community | grid | category | campaign | all; key: the group's id.
    sa.Column("grouping", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    *(sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in _COUNTS),
)

rollup_hist = sa.Table(
    "rollup_hist",
    metadata,
    # Mergeable duration histograms per (grouping, day, key): measure ack (minutes dispatched ->
    # acknowledged) or rect (hours reported -> rectified); bucket from repository.bucket_sql; n values
    # in the bucket and their exact sum in microseconds (the bucket's mean stands for its values when
    # reading a median; integers, so coarser levels kept by deltas stay exactly the sum of the days).
    sa.Column("grouping", sa.Text),
    sa.Column("day", sa.Date),
    sa.Column("key", sa.Text),
    sa.Column("measure", sa.Text),
    sa.Column("bucket", sa.SmallInteger),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("total_us", sa.BigInteger, nullable=False),
    # Covering: a period's histogram rows are read by an index-only scan; the measure before the
    # day, so that one measure's rows of a day lie together (a median reads one measure).
    sa.PrimaryKeyConstraint(
        "grouping", "measure", "day", "key", "bucket", postgresql_include=["n", "total_us"]
    ),
)

# Coarser levels of rollup_groups and rollup_hist: span 'week' (ISO week, start = its Monday) or
# 'month' (start = its first day); each row is exactly the sum of the day rows of its span (kept by
# deltas when days are recomputed). A period reads its whole months and weeks here and only its
# edge days from the day tables.
rollup_groups_span = sa.Table(
    "rollup_groups_span",
    metadata,
    sa.Column("grouping", sa.Text, primary_key=True),
    sa.Column("span", sa.Text, primary_key=True),
    sa.Column("start", sa.Date, primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    *(sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in _COUNTS),
)

rollup_hist_span = sa.Table(
    "rollup_hist_span",
    metadata,
    sa.Column("grouping", sa.Text),
    sa.Column("span", sa.Text),
    sa.Column("start", sa.Date),
    sa.Column("key", sa.Text),
    sa.Column("measure", sa.Text),
    sa.Column("bucket", sa.SmallInteger),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("total_us", sa.BigInteger, nullable=False),
    # Covering, measure before span and start: as rollup_hist.
    sa.PrimaryKeyConstraint(
        "grouping", "measure", "span", "start", "key", "bucket", postgresql_include=["n", "total_us"]
    ),
)

rollup_dirty = sa.Table(
    "rollup_dirty",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    # When the oldest change not yet in the day's rollup was marked (a summary's staleness bound).
    sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # Bumped by every mark: a refresh clears only the marks it saw, at the version it saw.
    sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
)

# Changes not yet in the rollup (#20): each consumer transaction records how its facts change the
# rollup, summed over the batch (see store/changes.py): per day and dimensions (the groupings'
# keys) the signed sums of the 0/1 counts, and per histogram bucket of those (``measure``: ack for
# a dispatch, rect for a hazard; ``bucket``) the signed count and sum of the durations (``n``,
# ``total_us``). A row carries one bucket's sums, and the counts' on the first row of its
# dimensions (without a measure when no bucket moved; ``n`` and ``total_us`` then 0); sums all 0
# are not written (reporting_0014; before, a row per old (-1) and new (+1) contribution). The
# refresher folds the rows into the rollup tables and deletes them.
CHANGE_DIMENSIONS = (
    "day",
    "department_id",
    "community_id",
    "grid_id",
    "category",
    "campaign_ids",
    "street_id",
    "reporter_type",
    "source",
    "measure",
    "bucket",
)
rollup_changes = sa.Table(
    "rollup_changes",
    metadata,
    # The recording transaction's start: the age of the oldest change not yet in the rollup.
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("department_id", sa.Text, nullable=False),
    sa.Column("community_id", sa.Text),
    sa.Column("grid_id", sa.Text),
    sa.Column("category", sa.Text),
    sa.Column("campaign_ids", pg.ARRAY(sa.Text)),
    sa.Column("street_id", sa.Text),
    sa.Column("reporter_type", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("measure", sa.Text),
    sa.Column("bucket", sa.SmallInteger),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("total_us", sa.BigInteger, nullable=False),
    *(sa.Column(name, sa.Integer, nullable=False) for name in _COUNTS),
)

PROJECTION_TABLES: tuple[sa.Table, ...] = (
    hazards,
    dispatches,
    relapses,
    actions,
    rollup,
    rollup_groups,
    rollup_hist,
    rollup_groups_span,
    rollup_hist_span,
    rollup_dirty,
    rollup_changes,
)
"""The tables a rebuild recreates and swaps in (never the inbox or outbox)."""
