"""The admin page in a real headless Chromium (Debian's package) driven by Playwright (#18).

An operator pastes their token, creates a department token (shown once), which then works in
another service (dispatch, its own runtime), revokes it (refused there within seconds), and ends a
campaign it made from its form (and a department); the page is Chinese first with English on the toggle, with no console errors.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.reporting.app import create_app
from tests.integration.dispatch import dispatch_helpers
from tests.integration.reporting.reporting_helpers import settings_for
from tests.integration.reporting.test_reporting_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, serving

pytestmark = pytest.mark.integration

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"
OPERATOR_TOKEN = "tok-operator"
CITY = ZoneInfo("Asia/Shanghai")


async def _until(page: Any, action: Any) -> None:
    """Run a page action and wait until the page has reloaded its tables."""
    await page.evaluate("document.body.dataset.state = 'stale'")
    await action()
    await page.wait_for_selector("body[data-state=loaded]", state="attached", timeout=60_000)


async def _status_within(client: httpx.AsyncClient, token: str, status: int, seconds: float) -> float:
    started = time.monotonic()
    while True:
        answer = await client.get("/api/v1/dispatches", headers={"Authorization": f"Bearer {token}"})
        if answer.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"dispatch answered {answer.status_code}, not {status}"
        await _sleep(0.1)


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent: run scripts/ensure-chromium.sh (apt-get chromium)",
)
async def test_admin_page_creates_and_revokes_a_department_token_and_ends_a_campaign(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    from playwright.async_api import async_playwright

    today = datetime.now(UTC).astimezone(CITY).date()
    app = create_app(settings_for(db_url, kafka.bootstrap_servers, topics))
    problems: list[str] = []
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with (
        serving(app) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=operator, timeout=60) as api,
        dispatch_helpers.app_factory(db_url, kafka, topics)() as (_, dispatch),
    ):
        campaign = {
            "id": "page-campaign",
            "name_en": "Page campaign",
            "name_zh": "页面测试专项",
            "starts_on": (today - timedelta(days=5)).isoformat(),
            "ends_on": (today + timedelta(days=5)).isoformat(),
            "categories": ["blocked_fire_passage"],
            "targets": {"found": 10},
        }
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="zh-CN")
                page = await context.new_page()
                page.on(
                    "console",
                    lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
                )
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                await page.goto(base_url + "/admin")
                assert await page.text_content("h1") == "运行管理"
                await page.fill("#token-input", OPERATOR_TOKEN)
                await _until(page, lambda: page.click("#token-form button[type=submit]"))
                assert await page.evaluate("localStorage.getItem('hazard-admin-token')") == OPERATOR_TOKEN

                # A department token for gas: shown once, and it works in dispatch.
                await page.fill("#p-id", "dept-gas-page")
                await page.select_option("#p-role", "department")
                await page.fill("#p-department", "gas")
                await _until(page, lambda: page.click("#p-create"))
                token = (await page.text_content("#new-token-value")) or ""
                assert token.startswith("hz_")
                row = page.locator("tr[data-principal='dept-gas-page']")
                assert await row.locator(".state").text_content() == "有效"
                await _status_within(dispatch, token, 200, 5)

                # Revoked from the page: refused by dispatch within 5 s.
                await _until(page, lambda: row.locator("button.revoke").click())
                assert await row.locator(".state").text_content() == "已吊销"
                await _status_within(dispatch, token, 401, 5)

                # A campaign and a department made from the page's forms.
                await page.fill("#c-id", campaign["id"])
                await page.fill("#c-name-zh", campaign["name_zh"])
                await page.fill("#c-name-en", campaign["name_en"])
                await page.fill("#c-starts", campaign["starts_on"])
                await page.fill("#c-ends", campaign["ends_on"])
                await page.fill("#c-categories", "blocked_fire_passage")
                await page.fill("#c-found", "10")
                await _until(page, lambda: page.click("#c-create"))
                await page.fill("#d-id", "hazmat")
                await page.fill("#d-name-zh", "危化品")
                await page.fill("#d-name-en", "Hazardous materials")
                await page.fill("#d-contact", "值班室")
                await page.fill("#d-phone", "0755 1234")
                await _until(page, lambda: page.click("#d-create"))
                assert (
                    await page.locator("tr[data-department='hazmat'] td").nth(2).text_content()
                    == "值班室 0755 1234"
                )

                # End the campaign from the page: its last day is today.
                campaign_row = page.locator("tr[data-campaign='page-campaign']")
                await _until(page, lambda: campaign_row.locator("button.end").click())
                assert await campaign_row.locator(".window").text_content() == (
                    f"{campaign['starts_on']} — {today.isoformat()}"
                )
                await page.screenshot(path=str(RESULTS / "admin-page.png"), full_page=True)

                # English on the toggle.
                await _until(page, lambda: page.click("#lang-toggle"))
                assert await page.text_content("h1") == "Administration"
                assert await row.locator(".state").text_content() == "revoked"
                await context.close()
            finally:
                await browser.close()

        listed = (await api.get("/api/v1/admin/campaigns")).json()["campaigns"]
        made = next(c for c in listed if c["id"] == "page-campaign")
        assert made == {
            **campaign,
            "ends_on": today.isoformat(),
            "targets": {**campaign["targets"], "notices_issued": None, "rectified": None},
        }
        audit = (await api.get("/api/v1/admin/audit")).json()["audit"]
        assert [(a["action"], a["entity"], a["entity_id"]) for a in audit] == [
            ("end", "campaign", "page-campaign"),
            ("create", "department", "hazmat"),
            ("create", "campaign", "page-campaign"),
            ("revoke", "principal", "dept-gas-page"),
            ("create", "principal", "dept-gas-page"),
        ]
        assert all(a["actor"] == "op-1" for a in audit)
    assert problems == []
