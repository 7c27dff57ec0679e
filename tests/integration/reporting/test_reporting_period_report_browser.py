"""The dashboard's period-report buttons in a real headless Chromium, and the report's committed samples.

A seed-shaped history (demo-like: about three hazards a day for eighteen months) goes through the
broker into reporting; in the dashboard the supervisor picks the first half of 2026 and clicks
"期报（网页）" and "期报（Excel）". The downloads are the API's report for those dates, in the page's
language; they are written to docs/period-report/ with a screenshot of the HTML page as Chromium
shows it (a screenshot down to the head of the overdue list), so the sample in the repository is what the button gives.
Skipped only when /usr/bin/chromium is absent (scripts/ensure-chromium.sh installs it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from services.reporting.app import create_app
from shared.events import dump_event
from shared.reference import load_reference_data
from tests.integration.reporting.reporting_helpers import SUPERVISOR, auth, settings_for, wait_applied
from tests.integration.reporting.test_reporting_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, serving
from tests.support import seed_history
from tests.support.kafka_tools import produce

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[3] / "docs" / "period-report"
PERIOD = {"from": "2026-01-01", "to": "2026-06-30"}


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: run scripts/ensure-chromium.sh (apt-get chromium)",
)
async def test_period_report_buttons_download_the_report(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    from playwright.async_api import async_playwright

    plans = seed_history.generate(load_reference_data(), per_day=3.0)
    events = seed_history.events_of(plans)
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )
    app = create_app(settings_for(db_url, kafka.bootstrap_servers, topics))
    DOCS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=auth(), timeout=60) as api,
    ):
        await wait_applied(db_url, len(events), timeout_s=240)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                context = await browser.new_context(
                    viewport={"width": 1366, "height": 900}, locale="zh-CN", accept_downloads=True
                )
                page = await context.new_page()
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                await page.goto(base_url + "/")
                await page.wait_for_selector("body[data-state=need-token]", state="attached", timeout=60_000)
                await page.fill("#token-input", SUPERVISOR)
                await page.click("#token-form button[type=submit]")
                await page.wait_for_selector("body[data-state=ready]", state="attached", timeout=60_000)
                await page.fill("#f-from", PERIOD["from"])
                await page.fill("#f-to", PERIOD["to"])
                assert await page.text_content("#period-html") == "期报（网页）"

                downloads = {}
                for fmt in ("html", "xlsx"):
                    async with page.expect_download(timeout=60_000) as info:
                        await page.click(f"#period-{fmt}")
                    download = await info.value
                    assert download.suggested_filename == f"period-report-2026-01-01-2026-06-30-zh.{fmt}"
                    target = DOCS / f"period-report-2026-h1-zh.{fmt}"
                    await download.save_as(target)
                    downloads[fmt] = target

                # What the button saved is the API's report for the same dates and language.
                api_html = (await api.get("/api/v1/reports/period", params={**PERIOD, "format": "html"})).text
                saved_html = downloads["html"].read_text(encoding="utf-8")
                assert _tables(saved_html) == _tables(api_html)
                book = load_workbook(downloads["xlsx"])
                report = (await api.get("/api/v1/reports/period", params=PERIOD)).json()
                assert book[book.sheetnames[0]]["A7"].value == report["sentences"]["zh"][0]
                groups = list(book[book.sheetnames[2]].iter_rows(values_only=True))
                fire = next(r for r in report["tables"]["groups"] if r["key"] == "fire")
                assert next(r for r in groups if r[0] == "消防")[1] == fire["current"]

                # English on the toggle: the button follows the page's language.
                await page.click("#lang-toggle")
                async with page.expect_download(timeout=60_000) as info:
                    await page.click("#period-xlsx")
                english = await info.value
                assert english.suggested_filename.endswith("-en.xlsx")
                await english.save_as(DOCS / "period-report-2026-h1-en.xlsx")
                en_book = load_workbook(io.BytesIO((DOCS / "period-report-2026-h1-en.xlsx").read_bytes()))
                assert en_book.sheetnames[0] == "Summary"
                en_html = (
                    await api.get("/api/v1/reports/period", params={**PERIOD, "format": "html", "lang": "en"})
                ).text
                (DOCS / "period-report-2026-h1-en.html").write_text(en_html, encoding="utf-8")

                # The saved page as Chromium shows and prints it (a file, no server: self-contained).
                view = await context.new_page()
                await view.goto(downloads["html"].as_uri())
                assert await view.locator("table").count() == 10
                first_link = view.locator("#overdue ~ table a").first
                assert (await first_link.get_attribute("href") or "").startswith("http")
                # Every table and the head of the overdue list (its 200 rows would make a 2 MB picture).
                box = await view.locator("#overdue").bounding_box()
                assert box is not None
                await view.screenshot(
                    path=str(DOCS / "period-report-2026-h1-zh.png"),
                    full_page=True,
                    clip={"x": 0, "y": 0, "width": 1366, "height": box["y"] + 600},
                )
            finally:
                await browser.close()
    assert problems == []


def _tables(page: str) -> str:
    """The page's tables but the overdue list (its hours overdue grow between the two requests)."""
    return page[page.index('<h2 id="overview"') : page.index('<h2 id="overdue"')]
