"""The supervisor's period report (#18) from a seed-shaped history, through the real broker and PostgreSQL.

Eighteen months of a street's hazards (tests/support/seed_history.py) go to a real topic; the
reporting app consumes them. Every table of the seed's report — found split by kind, by street and
community, by reporter type and channel, campaigns with found / notices issued / rectified against
targets, overdue receipts and escalations by department, rectification and relapse rates — is
checked, for the half-year, the half-year before and the same half-year a year earlier, against
the figures the generator's plans give (plain Python over the plans, no reporting code). Then the
HTML and the workbook are parsed back, and a rebuild from the topic gives the same report.
"""

from __future__ import annotations

import io
from datetime import date
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from services.reporting import domain
from services.reporting.rebuild import rebuild
from shared.events import dump_event
from shared.reference import load_reference_data
from shared.roles import role_url
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for, wait_applied
from tests.support import seed_history
from tests.support.kafka_tools import produce

pytestmark = pytest.mark.integration

H1 = (date(2026, 1, 1), date(2026, 6, 30))
PERIOD = {"from": "2026-01-01", "to": "2026-06-30"}


class _Tables(HTMLParser):
    """Headings, table cells and links of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self.links: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []
        elif tag == "a":
            self.links.extend(v or "" for k, v in attrs if k == "href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


async def _get(client: httpx.AsyncClient, path: str, **params: str) -> httpx.Response:
    response = await client.get(path, params=params, headers=auth())
    assert response.status_code == 200, response.text
    return response


async def _report(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    body: dict[str, Any] = (await _get(client, "/api/v1/reports/period", **{**PERIOD, **params})).json()
    return body


def _without_moment(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if k not in ("as_of", "sentences")}
    out["tables"] = {
        k: ([{kk: vv for kk, vv in r.items() if kk != "hours_overdue"} for r in v] if k == "overdue" else v)
        for k, v in report["tables"].items()
    }
    return out


async def test_period_report_gives_every_seed_table_with_its_comparisons(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    reference = load_reference_data()
    plans = seed_history.generate(reference)
    events = seed_history.events_of(plans)
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )
    previous = domain.previous_period(*H1)
    year_earlier = domain.year_earlier(*H1)
    assert previous == (date(2025, 7, 4), date(2025, 12, 31))
    want = [seed_history.expected(plans, *p) for p in (H1, previous, year_earlier)]
    settings = settings_for(role_url(db_url, "reporting"), kafka.bootstrap_servers, topics)

    async with running_app(settings) as (_app, client):
        await wait_applied(db_url, len(events))
        report = await _report(client)
        assert report["previous_period"] == {"from": "2025-07-04", "to": "2025-12-31"}
        assert report["year_earlier"] == {"from": "2025-01-01", "to": "2025-06-30"}
        tables = report["tables"]

        # 1. Overview: every figure in the three periods.
        overview = {r["figure"]: r for r in tables["overview"]}
        for figure in (
            "reported",
            "rectified",
            "notices_issued",
            "notices_on_site",
            "notices_ordered",
            "rectification_overdue",
            "closed",
            "relapsed",
            "dispatched",
        ):
            got = [overview[figure][k] for k in ("current", "previous", "year_earlier")]
            assert got == [w[figure] for w in want], figure
        assert [overview["overdue_receipts"][k] for k in ("current", "previous", "year_earlier")] == [
            sum(w["overdue_by_department"].values()) for w in want
        ]
        assert [overview["escalations"][k] for k in ("current", "previous", "year_earlier")] == [
            sum(w["escalations_by_department"].values()) for w in want
        ]
        cur, prev, last = (w["reported"] for w in want)
        assert overview["reported"]["change"] == round((cur - prev) / prev, 4)
        assert overview["reported"]["yoy"] == round((cur - last) / last, 4)
        rate = [round(w["rectified"] / w["reported"], 4) for w in want]
        assert overview["rectification_rate"]["current"] == rate[0]
        assert overview["rectification_rate"]["yoy"] == round(rate[0] - rate[2], 4)
        assert overview["relapse_rate"]["current"] == round(want[0]["relapsed"] / want[0]["closed"], 4)

        # 2. Fire / public security / production safety / other.
        groups = {r["key"]: r for r in tables["groups"]}
        for g in ("fire", "public_security", "production_safety", "other"):
            assert [groups[g][k] for k in ("current", "previous", "year_earlier")] == [
                w["by_group"][g] for w in want
            ], g
        assert groups["fire"]["label"] == {"en": "Fire", "zh": "消防"}

        # 3-6. By street (split by kind), community, reporter type, channel.
        (street,) = tables["streets"]
        assert street["key"] == "henggang"
        assert street["current"] == want[0]["reported"]
        assert street["by_group"] == {g: want[0]["by_group"][g] for g in street["by_group"]}
        communities = {r["key"]: r for r in tables["communities"]}
        for community in reference.communities:
            row = communities[community.id]
            assert [row[k] for k in ("current", "previous", "year_earlier")] == [
                w["by_community"][community.id] for w in want
            ], community.id
        reporters = {r["key"]: r for r in tables["reporter_types"]}
        for kind, n in want[0]["by_reporter_type"].items():
            assert reporters[kind]["current"] == n
            assert reporters[kind]["year_earlier"] == want[2]["by_reporter_type"][kind]
        assert reporters["building_manager"]["label"]["zh"] == "楼栋长"
        sources = {r["key"]: r["current"] for r in tables["sources"]}
        assert sources == dict(want[0]["by_source"])

        # 7-8. Campaigns: found / notices issued (on the spot + ordered) / rectified, against targets.
        campaigns = {r["key"]: r for r in tables["campaigns"]}
        assert set(campaigns) == set(want[0]["campaigns"])
        for cid, w in want[0]["campaigns"].items():
            row = campaigns[cid]
            got = (row["found"], row["notices_issued"], row["notices_on_site"], row["rectified"])
            assert got == (w["found"], w["notices_issued"], w["notices_on_site"], w["rectified"]), cid
        heaters = campaigns["direct-vent-heaters-2026"]
        # As the seed's heater campaign: every heater found got its notice on the spot, and was fixed.
        assert (
            heaters["found"]
            == heaters["notices_issued"]
            == heaters["notices_on_site"]
            == heaters["rectified"]
        )
        assert heaters["targets"] == {"found": 3235, "notices_issued": 3235, "rectified": 3235}
        assert heaters["progress"]["notices_issued"] == round(heaters["notices_issued"] / 3235, 4)
        assert heaters["state"] == "ended"
        split = {r["key"]: r["by_group"] for r in tables["campaign_groups"]}
        for cid, w in want[0]["campaigns"].items():
            assert {g: n for g, n in split[cid].items() if n} == dict(w["by_group"]), cid

        # 9. Departments: overdue receipts and escalations, with the year earlier.
        departments = {r["key"]: r for r in tables["departments"]}
        for dep, n in want[0]["dispatched_by_department"].items():
            row = departments[dep]
            assert row["dispatched"] == n
            assert row["overdue_receipts"] == want[0]["overdue_by_department"][dep]
            assert row["escalations"]["current"] == want[0]["escalations_by_department"][dep]
            assert row["escalations"]["year_earlier"] == want[2]["escalations_by_department"][dep]
            expected_rate = round(want[0]["overdue_by_department"][dep] / n, 4)
            assert row["overdue_receipt_rate"]["current"] == expected_rate
        ordered = [r["overdue_receipts"] for r in tables["departments"]]
        assert ordered == sorted(ordered, reverse=True)  # worst first, as a 通报 lists them

        # 10. The open overdue list (every period's never-acknowledged dispatches), each linked to its case.
        never = sum(p.ack == "never" for p in plans)
        assert len(tables["overdue"]) == never
        first = tables["overdue"][0]
        assert first["case_url"].endswith(f"/api/v1/hazards/{first['hazard_id']}")

        # Sentences, Chinese by default and English.
        zh, en = report["sentences"]["zh"], report["sentences"]["en"]
        fire, ps = want[0]["by_group"]["fire"], want[0]["by_group"]["public_security"]
        assert zh[0].startswith(
            f"2026-01-01至2026-06-30，共发现隐患{want[0]['reported']:,}宗，其中消防{fire:,}宗、治安{ps:,}宗"
        )
        assert en[0].startswith(
            f"From 2026-01-01 to 2026-06-30, {want[0]['reported']:,} hazards were found, of which {fire:,} fire"
        )
        assert any(f"发出整改通知书{want[0]['notices_issued']:,}份" in s for s in zh)

        # The summary answers the same dimensions (group; pairs), and agrees with the report.
        by_group = (await _get(client, "/api/v1/reports/summary", **PERIOD, group_by="group")).json()
        assert {g["key"]: g["reported"] for g in by_group["groups"]} == dict(want[0]["by_group"])
        assert by_group["totals"]["reported"] == want[0]["reported"]
        fire_row = next(g for g in by_group["groups"] if g["key"] == "fire")
        assert fire_row["year_earlier"]["reported"] == want[2]["by_group"]["fire"]
        assert fire_row["label"]["zh"] == "消防"
        pairs = (await _get(client, "/api/v1/reports/summary", **PERIOD, group_by="category,campaign")).json()
        assert pairs["group_by"] == "campaign,category"
        got_pairs = {g["key"]: g["reported"] for g in pairs["groups"]}
        heater_key = "direct-vent-heaters-2026|direct_vent_water_heater"
        assert got_pairs[heater_key] == want[0]["campaigns"]["direct-vent-heaters-2026"]["found"]
        street_group = (
            await _get(client, "/api/v1/reports/summary", **PERIOD, group_by="street,group")
        ).json()
        assert {g["key"]: g["reported"] for g in street_group["groups"]} == {
            f"henggang|{g}": n for g, n in want[0]["by_group"].items()
        }
        assert street_group["groups"][0]["label"]["zh"].startswith("横岗街道 / ")
        kinds = (await _get(client, "/api/v1/reports/summary", **PERIOD, group_by="reporter_type")).json()
        assert {g["key"]: g["reported"] for g in kinds["groups"]} == dict(want[0]["by_reporter_type"])
        csv_text = (
            await _get(client, "/api/v1/reports/summary", **PERIOD, group_by="group", format="csv")
        ).text
        assert csv_text.splitlines()[0].startswith("group_by,key,label_en,label_zh,reported")
        assert f"group,fire,Fire,消防,{fire}," in csv_text

        # Buckets in the city's calendar: months, quarters, half-years and years add up to the period.
        for bucket, starts in (
            ("month", [f"2026-{m:02d}-01" for m in range(1, 7)]),
            ("quarter", ["2026-01-01", "2026-04-01"]),
            ("half_year", ["2026-01-01"]),
            ("year", ["2026-01-01"]),
        ):
            series = (
                await _get(
                    client,
                    "/api/v1/reports/timeseries",
                    **PERIOD,
                    metric="reported",
                    group_by="department",
                    bucket=bucket,
                )
            ).json()
            assert series["buckets"] == starts, bucket
            assert sum(sum(s["values"]) for s in series["series"]) == want[0]["reported"], bucket
        by_month = {p.day.month: 0 for p in seed_history.in_period(plans, *H1)}
        for p in seed_history.in_period(plans, *H1):
            by_month[p.day.month] += 1
        series = (
            await _get(
                client,
                "/api/v1/reports/timeseries",
                **PERIOD,
                metric="reported",
                group_by="street",
                bucket="month",
            )
        ).json()
        assert series["series"][0]["values"] == [by_month.get(m, 0) for m in range(1, 7)]

        # HTML: printable, every table, the overdue list linked to the cases.
        page = await _get(client, "/api/v1/reports/period", **PERIOD, format="html")
        assert page.headers["content-type"].startswith("text/html")
        parsed = _Tables()
        parsed.feed(page.text)
        assert parsed.headings[0] == "概述"
        assert len(parsed.tables) == 10
        assert parsed.tables[1][0] == ["类别", "本期", "上期", "去年同期", "环比", "同比", "占比"]
        fire_cells = next(row for row in parsed.tables[1] if row and row[0] == "消防")
        assert fire_cells[1:4] == [f"{w['by_group']['fire']:,}" for w in want]
        assert sum(link.endswith("/api/v1/hazards/" + first["hazard_id"]) for link in parsed.links) == 1
        page_en = await _get(client, "/api/v1/reports/period", **PERIOD, format="html", lang="en")
        assert "1. Overview" in page_en.text
        assert "hazards were found" in page_en.text

        # xlsx: one sheet per table, read back with openpyxl.
        book_bytes = (await _get(client, "/api/v1/reports/period", **PERIOD, format="xlsx")).content
        book = load_workbook(io.BytesIO(book_bytes))
        assert len(book.sheetnames) == 11  # the summary and ten tables
        assert book.sheetnames[0] == "概述"
        assert book[book.sheetnames[0]]["A7"].value == zh[0]
        kinds_sheet = book[book.sheetnames[2]]
        rows = list(kinds_sheet.iter_rows(values_only=True))
        assert rows[0] == ("类别", "本期", "上期", "去年同期", "环比", "同比", "占比")
        fire_row_x = next(r for r in rows if r[0] == "消防")
        assert fire_row_x[1:4] == tuple(w["by_group"]["fire"] for w in want)
        overdue_sheet = book[book.sheetnames[-1]]
        assert overdue_sheet["A2"].hyperlink.target == first["case_url"]

        # A year: its previous period is its year-earlier one (read once, shown twice).
        year = await _report(client, **{"from": "2025-07-01", "to": "2026-06-30"})
        assert year["previous_period"] == year["year_earlier"] == {"from": "2024-07-01", "to": "2025-06-30"}
        want_year = [seed_history.expected(plans, date(2025, 7, 1), date(2026, 6, 30))]
        want_year.append(seed_history.expected(plans, date(2024, 7, 1), date(2025, 6, 30)))
        year_overview = {r["figure"]: r for r in year["tables"]["overview"]}
        for figure in ("reported", "rectified", "notices_issued", "dispatched", "closed"):
            got = [year_overview[figure][k] for k in ("current", "previous", "year_earlier")]
            assert got == [want_year[0][figure], want_year[1][figure], want_year[1][figure]], figure
        year_groups = {r["key"]: r for r in year["tables"]["groups"]}
        assert year_groups["fire"]["year_earlier"] == want_year[1]["by_group"]["fire"]

        live = _without_moment(report)

        # Rebuild from the topic: the same report.
        await rebuild(
            database_url=db_url,
            bootstrap_servers=kafka.bootstrap_servers,
            topic=topics["lifecycle"],
            timezone="Asia/Shanghai",
            batch_size=97,
            workers=2,
        )
        assert _without_moment(await _report(client)) == live


async def test_period_report_refuses_bad_input(db_url: str, kafka: Any, topics: dict[str, str]) -> None:
    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_app, client):
        url = "/api/v1/reports/period"
        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers=auth("tok-fire"))).status_code == 403
        bad = await client.get(url, params={"from": "2026-07-01", "to": "2026-01-01"}, headers=auth())
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "invalid_period"
        for params in ({"format": "pdf"}, {"lang": "fr"}, {"overdue_limit": "-1"}, {"from": "soon"}):
            response = await client.get(url, params=params, headers=auth())
            assert response.status_code == 422, params
            assert "error" in response.json()
        empty = await client.get(url, params=PERIOD, headers=auth("tok-operator"))
        assert empty.status_code == 200
        assert empty.json()["tables"]["overview"][0]["current"] == 0
        assert "共发现隐患0宗" in empty.json()["sentences"]["zh"][0]
