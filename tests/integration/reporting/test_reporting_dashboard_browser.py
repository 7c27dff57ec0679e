"""The dashboard in a real headless Chromium (Debian's package) driven by Playwright.

It loads with no console errors, its charts show the figures the API returns, the filters and the
language toggle change them, and screenshots (laptop and phone) are written to bench/results/.
Skipped only when /usr/bin/chromium is absent (scripts/ensure-chromium.sh installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn

from services.reporting.app import create_app
from shared.devstack.ports import free_port
from shared.events import dump_event
from tests.integration.reporting.reporting_helpers import SUPERVISOR, auth, settings_for, wait_applied
from tests.support.kafka_tools import produce
from tests.unit.reporting.reporting_scenario import build_log

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APRIL = {"from": "2026-04-01", "to": "2026-04-30"}
CITY = ZoneInfo("Asia/Shanghai")  # the reference data's calendar zone
BROWSER_ZONE = "America/New_York"  # the browser's own zone differs: the page must not use it


def city(iso: str, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An API timestamp as the page must show it: in the city's zone."""
    return datetime.fromisoformat(iso).astimezone(CITY).strftime(fmt)


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve the app over real HTTP on a free port (the browser needs a socket)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(900):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.1)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=90)


async def _values(page: Any, selector: str, attrs: tuple[str, ...]) -> list[tuple[str, ...]]:
    result: list[list[str]] = await page.eval_on_selector_all(
        selector, f"(nodes) => nodes.map((n) => {list(attrs)!r}.map((a) => n.getAttribute(a)))"
    )
    return [tuple(r) for r in result]


def _num(value: str) -> float | None:
    return None if value == "" else float(value)


async def _apply(page: Any, **fields: str) -> None:
    for selector, value in fields.items():
        if selector in {"f-community", "f-category"}:
            await page.select_option(f"#{selector}", value)
        else:
            await page.fill(f"#{selector}", value)
    await page.evaluate("document.body.dataset.state = 'stale'")
    await page.click("#apply")
    await page.wait_for_selector("body[data-state=ready]", state="attached", timeout=60_000)


async def _check_charts_match_api(
    page: Any, api: httpx.AsyncClient, params: dict[str, str]
) -> dict[str, Any]:
    """Every chart's drawn values equal the API's figures for the same filters."""
    dept = (await api.get("/api/v1/reports/summary", params={**params, "group_by": "department"})).json()
    comm = (await api.get("/api/v1/reports/summary", params={**params, "group_by": "community"})).json()
    series = (
        await api.get(
            "/api/v1/reports/timeseries",
            params={**params, "metric": "overdue_receipts", "group_by": "department", "bucket": "day"},
        )
    ).json()

    drawn = await _values(
        page, "[data-chart=community] rect[data-series]", ("data-key", "data-series", "data-value")
    )
    expected = [(g["key"], s, g[s]) for g in comm["groups"] for s in ("rectification_rate", "relapse_rate")]
    assert [(k, s, _num(v)) for k, s, v in drawn] == expected

    drawn = await _values(
        page, "[data-chart=overdue-dept] rect[data-series]", ("data-key", "data-series", "data-value")
    )
    rates = {
        (g["key"], "current"): g["overdue_receipt_rate"]
        for g in dept["groups"]
        if g["dispatched"] or g["previous_period"]["dispatched"] or g["year_earlier"]["dispatched"]
    }
    for g in dept["groups"]:
        rates[(g["key"], "previous")] = g["previous_period"]["overdue_receipt_rate"]
        rates[(g["key"], "year_earlier")] = g["year_earlier"]["overdue_receipt_rate"]
    assert drawn, "the department chart drew nothing"
    for key, series_id, value in drawn:
        assert _num(value) == rates[(key, series_id)], (key, series_id)

    points = await _values(
        page, "[data-chart=overdue-time] circle", ("data-key", "data-bucket", "data-value")
    )
    api_points = [
        (s["key"], b, v)
        for s in series["series"]
        for b, v in zip(series["buckets"], s["values"], strict=True)
    ]
    assert [(k, b, _num(v)) for k, b, v in points] == [
        (k, b, None if v is None else float(v)) for k, b, v in api_points
    ]

    kpi = await page.text_content("[data-kpi=reported] .value")
    assert kpi is not None
    assert int(kpi) == dept["totals"]["reported"]
    return dept


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: run scripts/ensure-chromium.sh (apt-get chromium)",
)
async def test_dashboard_in_chromium(db_url: str, kafka: Any, topics: dict[str, str]) -> None:
    from playwright.async_api import async_playwright

    log = build_log()
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in log],
    )
    app = create_app(settings_for(db_url, kafka.bootstrap_servers, topics))
    RESULTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=auth(), timeout=60) as api,
    ):
        await wait_applied(db_url, len(log))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                context = await browser.new_context(
                    viewport={"width": 1366, "height": 900}, locale="zh-CN", timezone_id=BROWSER_ZONE
                )
                page = await context.new_page()
                page.on(
                    "console",
                    lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

                await page.goto(base_url + "/")
                await page.wait_for_selector("body[data-state=need-token]", state="attached", timeout=60_000)
                assert await page.is_visible("#token-input")
                await page.fill("#token-input", SUPERVISOR)
                await page.click("#token-form button[type=submit]")
                await page.wait_for_selector("body[data-state=ready]", state="attached", timeout=60_000)
                assert await page.evaluate("localStorage.getItem('hazard-reporting-token')") == SUPERVISOR
                # The first view is the API's default period (the city's calendar, not the browser's
                # UTC date, which named yesterday for eight hours every morning in Shenzhen).
                default = (await api.get("/api/v1/reports/summary", params={"group_by": "department"})).json()
                shown = (await page.input_value("#f-from"), await page.input_value("#f-to"))
                assert shown == (default["from"], default["to"])

                await _apply(page, **{"f-from": APRIL["from"], "f-to": APRIL["to"]})
                whole = await _check_charts_match_api(page, api, APRIL)
                assert whole["totals"]["reported"] == 6

                overdue = (await api.get("/api/v1/reports/overdue")).json()
                rows = await _values(page, "#overdue-table tr[data-dispatch-id]", ("data-dispatch-id",))
                assert [r[0] for r in rows] == [i["dispatch_id"] for i in overdue["items"]]
                assert overdue["items"], "the scenario leaves overdue dispatches open"
                # Each overdue row names the address and leads to the hazard's case (and timeline);
                # its deadline is in the city's time, not the browser's (New York here).
                for item in overdue["items"]:
                    row = f"#overdue-table tr[data-dispatch-id='{item['dispatch_id']}']"
                    assert item["address"] == "Road 1"
                    assert await page.text_content(f"{row} [data-cell=address]") == "Road 1"
                    href = await page.get_attribute(f"{row} [data-cell=address] a", "href")
                    assert href == item["case_url"]
                    assert href.endswith(f"/api/v1/hazards/{item['hazard_id']}")
                    shown = await page.text_content(f"{row} [data-cell=deadline]")
                    assert shown == city(item["receipt_deadline"]), (shown, item["receipt_deadline"])
                # Hotspots: the address and the community, not the place key.
                hotspots = (
                    await api.get("/api/v1/reports/relapse-hotspots", params={**APRIL, "min_relapses": "1"})
                ).json()
                hot = await _values(page, "#hotspot-table tr[data-place]", ("data-place",))
                assert hot == [("liuyue-01/B-1",)]
                spot = hotspots["items"][0]
                assert spot["address"] == "Road 1"
                assert await page.text_content("#hotspot-table [data-cell=place]") == "Road 1"
                assert (
                    await page.text_content("#hotspot-table [data-cell=community]") == spot["community"]["zh"]
                )
                assert spot["community"]["zh"] != "liuyue"
                last = await page.text_content("#hotspot-table [data-cell=last]")
                assert last == city(spot["last_relapsed_at"], "%Y-%m-%d")
                # An ended campaign shows its final figures, not "n / target".
                campaigns = {
                    c["campaign_id"]: c
                    for c in (await api.get("/api/v1/reports/campaigns")).json()["campaigns"]
                }
                spring = campaigns["spring-fire-2026"]
                found = await _values(
                    page, "[data-campaign=spring-fire-2026] [data-metric=found]", ("data-value",)
                )
                assert found == [("5",)]
                block = "[data-campaign=spring-fire-2026]"
                assert await page.get_attribute(block, "data-state") == spring["state"]
                text = await page.text_content(f"{block} [data-metric=found]")
                if spring["state"] == "ended":  # 2026-05-25 is past for any run after the campaign
                    assert text == "5 (目标 4687)"
                    assert "已结束" in (await page.text_content(f"{block} .meta") or "")
                    assert await page.text_content(f"{block} [data-metric=closed]") == str(spring["closed"])
                else:
                    assert text == "5 / 4687 目标"
                # The status line: Chinese, the city's time of day.
                status = await page.text_content("#status") or ""
                match = re.fullmatch(r"已更新 (\d\d):(\d\d):\d\d", status)
                assert match, status
                now_city = datetime.now(CITY)
                assert f"{match[1]}:{match[2]}" in {
                    (now_city - timedelta(minutes=m)).strftime("%H:%M") for m in range(3)
                }, (status, now_city)
                await page.screenshot(path=str(RESULTS / "dashboard.png"), full_page=True)
                await page.locator("article:has(#hotspot-table)").screenshot(
                    path=str(RESULTS / "dashboard-hotspots.png")
                )
                await page.locator("article:has(#overdue-table)").screenshot(
                    path=str(RESULTS / "dashboard-overdue.png")
                )

                # A filter changes every figure: only liuyue.
                await _apply(page, **{"f-community": "liuyue"})
                liuyue = await _check_charts_match_api(page, api, {**APRIL, "community": "liuyue"})
                assert liuyue["totals"]["reported"] == 3
                communities = await _values(page, "[data-chart=community] rect[data-series]", ("data-key",))
                assert {c[0] for c in communities} == {"liuyue"}
                await _apply(page, **{"f-community": "", "f-category": "ebike_indoor_charging"})
                ebike = await _check_charts_match_api(
                    page, api, {**APRIL, "category": "ebike_indoor_charging"}
                )
                assert ebike["totals"]["reported"] == 2

                # Chinese by default, English on the toggle.
                assert await page.text_content("h1") == "隐患督办看板"
                await page.click("#lang-toggle")
                assert await page.text_content("h1") == "Hazard supervision dashboard"
                # The status line follows the language at once (it read 已更新 until the next load).
                status = await page.text_content("#status") or ""
                assert re.fullmatch(r"Updated \d\d:\d\d:\d\d", status), status
                await _apply(page, **{"f-category": ""})

                # A phone.
                phone = await browser.new_context(
                    viewport={"width": 390, "height": 844},
                    device_scale_factor=2,
                    is_mobile=True,
                    has_touch=True,
                )
                mobile = await phone.new_page()
                mobile.on("pageerror", lambda e: problems.append(f"phone page error: {e}"))
                await mobile.goto(base_url + "/")
                await mobile.fill("#token-input", SUPERVISOR)
                await mobile.click("#token-form button[type=submit]")
                await mobile.wait_for_selector("body[data-state=ready]", state="attached", timeout=60_000)
                await _apply(mobile, **{"f-from": APRIL["from"], "f-to": APRIL["to"]})
                width = await mobile.evaluate("document.documentElement.scrollWidth")
                assert width <= 392, f"the page scrolls sideways on a phone ({width} px)"
                await mobile.screenshot(path=str(RESULTS / "dashboard-phone.png"), full_page=True)
                await phone.close()
            finally:
                await browser.close()
    assert problems == []
