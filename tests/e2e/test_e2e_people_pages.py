"""The people's pages (/app/) in a real headless Chromium against the real stack (#17).

One stack (PostgreSQL, Tansu, intake, dispatch, tracking, reporting as processes) serves the whole
flow: a grid member (phone) reports with a photo while offline, closes the page, comes back online
and the batch syncs; another report queued offline goes out when the network returns. The fire
department's desk (desktop) sees the report appear, acknowledges it, records rectification with a
photo; the grid member fails verification with a note and a photo; the desk (phone) rectifies again;
the grid member passes it and the case is closed. The desk returns another hazard (退单), which
lands in the operators' queue, where the operator assigns it to another department with a reason.
Along the way: forms refuse bad input next to the field, another department's hazard typed into
the URL is "not found", a wrong token and an expired one send the user to sign-in with a clear word.
A second test (#16 item 2) drives extensions (延期申请), urging (督办) and progress notes: the desk asks
for a receipt extension, the operator approves it, the desk shows the new deadline beside the original;
the operator urges on a phone; the desk adds a note with a photo and asks for a rectification extension,
which the operator refuses; every step is on the timeline.
Screenshots of each page (desktop and phone) are written to bench/results/.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from PIL import Image

from tests.support.system import System

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
]
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
GRID = "liuyue-01"
WAIT_MS = 90_000
CITY = ZoneInfo("Asia/Shanghai")


def jpeg(color: tuple[int, int, int]) -> dict[str, Any]:
    """A small JPEG as a file chooser gives it."""
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), color).save(buffer, "JPEG", quality=80)
    return {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": buffer.getvalue()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is absent: run scripts/ensure-chromium.sh")
    photos = tmp_path_factory.mktemp("photos")
    system = System(
        proxy=False,
        pg_fast=True,
        service_env={
            "intake": {"PHOTOS__DIRECTORY": str(photos)},
            "reporting": {"APP__POLL_S": "1"},
        },
    )
    with system:
        yield system


async def _wait_for(
    client: httpx.AsyncClient, url: str, params: dict[str, str], headers: dict[str, str], pick: Any
) -> Any:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = pick((await client.get(url, params=params, headers=headers)).json()["items"])
        if found:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {url} {params}")


async def _photos_shown(page: Any, scope: str) -> int:
    """Wait until every photo under ``scope`` has loaded (fetched with the token, shown from a blob)."""
    await page.wait_for_function(
        f"""() => {{ const imgs = [...document.querySelectorAll("{scope} .thumbs img")];
        return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0 && i.src.startsWith("blob:")); }}""",
        timeout=WAIT_MS,
    )
    count: int = await page.eval_on_selector_all(f"{scope} .thumbs img", "(imgs) => imgs.length")
    return count


async def _sign_in(page: Any, base: str, token: str, landing: str) -> None:
    from playwright.async_api import expect

    await page.goto(base + "/app/")
    await expect(page.locator("#signin")).to_be_visible()
    await page.fill("#token-input", token)
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("body")).to_have_attribute("data-page", landing, timeout=WAIT_MS)


async def test_people_pages_whole_flow(stack: System) -> None:
    from playwright.async_api import async_playwright, expect

    base = stack.url("reporting")
    reporter = stack.principal("reporter", grid_id=GRID)
    fire = stack.principal("department", department_id="fire")
    operator = stack.principal("operator")
    RESULTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    # Another department's hazard, for the hand-edited URL.
    client = httpx.AsyncClient(timeout=30)
    other = await client.post(
        stack.url("intake") + "/api/v1/hazards",
        headers=stack.headers("reporter", grid_id="liuyue-02"),
        json={
            "report_id": "0b5e7c1e-7d7e-4c55-9d3e-4a8f3f7d2a01",
            "category": "public_security_hazard",
            "description": "楼道堆放杂物，夜间无照明",
            "location": {"lat": 22.622, "lon": 114.17437, "address": "六约路2号"},
            "grid_id": "liuyue-02",
            "observed_at": datetime.now(UTC).isoformat(),
        },
    )
    other.raise_for_status()
    other_hazard = other.json()["hazard_id"]

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)

        def watch(page: Any) -> None:
            def on_console(m: Any) -> None:
                # Failed loads are the API's answers the page handles (offline, 401, a photo not yet
                # visible); script errors are problems.
                if m.type == "error" and "Failed to load resource" not in m.text:
                    problems.append(f"console: {m.text}")

            page.on("console", on_console)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        try:
            # ---------------------------------------------------------- grid member, phone, offline
            phone = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN", timezone_id="Asia/Shanghai"
            )
            gm = await phone.new_page()
            watch(gm)
            await gm.goto(base + "/app/")
            await gm.fill("#token-input", "not-a-token")
            await gm.click("#signin-form button[type=submit]")
            await expect(gm.locator("#token-input-error")).to_have_text("令牌无效，请重新输入。")
            await _sign_in(gm, base, reporter.token, "grid")
            await gm.screenshot(path=str(RESULTS / "app-signin-grid-phone.png"))

            # Bad input is refused next to its field, in Chinese.
            await gm.click("#report-form button[type=submit]")
            await expect(gm.locator("#r-category-error")).to_have_text("请选择隐患类别。")
            await expect(gm.locator("#r-description-error")).to_have_text("请填写隐患描述。")
            await gm.set_input_files(
                "#r-photos", [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo"}]
            )
            await gm.click("#report-form button[type=submit]")
            await expect(gm.locator("#r-photos-error")).to_contain_text("不是 JPEG")

            await phone.set_offline(True)
            await gm.select_option("#r-category", "locked_rooftop_door")
            await gm.fill("#r-description", "天台逃生门被铁链锁死")
            await gm.fill("#r-address", "六约路12号")
            await gm.fill("#r-building", "LY-12")
            await gm.set_input_files("#r-photos", [jpeg((200, 40, 40))])
            await gm.click("#report-form button[type=submit]")
            await expect(gm.locator("#report-status")).to_have_text("已暂存，联网后自动发送。")
            await gm.select_option("#r-category", "blocked_fire_passage")
            await gm.fill("#r-description", "消防通道被货车占用")
            await gm.fill("#r-address", "六约路14号")
            await gm.click("#report-form button[type=submit]")
            await gm.click("#grid .tab[data-tab=outbox]")
            cards = gm.locator("#outbox-list .card")
            await expect(cards).to_have_count(2)
            await expect(gm.locator("#outbox-list .card[data-status=queued]")).to_have_count(2)
            await expect(gm.locator("#net-status")).to_contain_text("当前离线")
            await gm.screenshot(path=str(RESULTS / "app-grid-offline-queue-phone.png"), full_page=True)

            # Closing the page loses nothing: a new page, online again, sends both as one batch.
            await gm.close()
            await phone.set_offline(False)
            gm = await phone.new_page()
            watch(gm)
            batches: list[str] = []
            gm.on(
                "request",
                lambda r: batches.append(r.url) if r.url.endswith("/api/v1/hazards/batch") else None,
            )
            await gm.goto(base + "/app/")
            await expect(gm.locator("body")).to_have_attribute("data-page", "grid", timeout=WAIT_MS)
            await gm.click("#grid .tab[data-tab=outbox]")
            try:
                await expect(gm.locator("#outbox-list .card[data-status=accepted]")).to_have_count(
                    2, timeout=WAIT_MS
                )
            except AssertionError:
                raise AssertionError(f"{await gm.inner_text('#outbox-list')} {problems}") from None
            assert len(batches) == 1, batches
            ids = await gm.eval_on_selector_all(
                "#outbox-list .card", "(cards) => cards.map((c) => [c.dataset.reportId, c.dataset.hazardId])"
            )
            stored = await gm.evaluate(
                """() => new Promise((ok) => { const r = indexedDB.open('hazard-app', 1);
                r.onsuccess = () => { const q = r.result.transaction('outbox').objectStore('outbox').getAll();
                q.onsuccess = () => ok(q.result.map((i) => [i.body.description, i.status, i.hazard_id])); }; })"""
            )
            by_description = {d: h for d, _, h in stored}
            rooftop = by_description["天台逃生门被铁链锁死"]
            passage = by_description["消防通道被货车占用"]
            assert {h for _, h in ids} == {rooftop, passage}

            # A report queued offline goes out when the network returns (the 'online' event).
            await phone.set_offline(True)
            await gm.click("#grid .tab[data-tab=report]")
            await gm.select_option("#r-category", "other")
            await gm.fill("#r-description", "小区门口井盖松动")
            await gm.click("#report-form button[type=submit]")
            await gm.click("#grid .tab[data-tab=outbox]")
            await expect(gm.locator("#outbox-list .card[data-status=queued]")).to_have_count(1)
            await phone.set_offline(False)
            await expect(gm.locator("#outbox-list .card[data-status=accepted]")).to_have_count(
                3, timeout=WAIT_MS
            )
            await gm.screenshot(path=str(RESULTS / "app-grid-synced-phone.png"), full_page=True)

            # ---------------------------------------------------------- department desk, desktop
            laptop = await browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
            desk = await laptop.new_page()
            watch(desk)
            await _sign_in(desk, base, fire.token, "desk")
            card = desk.locator(f"#pending-list .card[data-hazard-id='{rooftop}']")
            await expect(card).to_be_visible(timeout=WAIT_MS)
            await expect(card).to_contain_text("天台逃生门被铁链锁死")
            await expect(card).to_contain_text("六约路12号")
            await expect(desk.locator(f"#pending-list .card[data-hazard-id='{passage}']")).to_be_visible()
            thumb = card.locator(".thumbs img")
            await expect(thumb).to_have_count(1)
            await desk.wait_for_function(
                f"() => {{ const i = document.querySelector(\"#pending-list .card[data-hazard-id='{rooftop}'] img\");"
                " return i && i.complete && i.naturalWidth > 0; }"
            )
            # Sorted by time left to the receipt deadline.
            deadlines = await desk.eval_on_selector_all(
                "#pending-list .card .left", "(nodes) => nodes.map((n) => n.dataset.deadline)"
            )
            assert deadlines == sorted(deadlines)
            # A new dispatch appears without reloading the page (the desk polls), marked as new.
            await desk.evaluate("() => { window.stillTheSamePage = true; }")
            late = await client.post(
                stack.url("intake") + "/api/v1/hazards",
                headers=reporter.headers,
                json={
                    "report_id": "5f7d0c2e-1f4b-4c8e-9a4d-7e3b2a1c0d99",
                    "category": "ebike_indoor_charging",
                    "description": "楼道内电动车飞线充电",
                    "location": {"lat": 22.622, "lon": 114.16813, "address": "六约路16号"},
                    "grid_id": GRID,
                    "observed_at": datetime.now(UTC).isoformat(),
                },
            )
            assert late.status_code == 201, late.text
            fresh = desk.locator(f"#pending-list .card.fresh[data-hazard-id='{late.json()['hazard_id']}']")
            await expect(fresh).to_contain_text("楼道内电动车飞线充电", timeout=WAIT_MS)
            assert await desk.evaluate("() => window.stillTheSamePage === true")
            await card.click()
            await expect(desk.locator("#detail-description")).to_have_text("天台逃生门被铁链锁死")
            await expect(desk.locator("#detail .timeline li[data-event='hazard.reported']")).to_have_count(1)
            # The extension and notes routes are another engineer's: enabled only where the service offers them.
            offered = (await client.get(stack.url("dispatch") + "/openapi.json")).json()["paths"]
            extension = desk.locator("#extension-form button[type=submit]")
            if "/api/v1/dispatches/{dispatch_id}/extension" in offered:
                await expect(extension).to_be_enabled()
            else:
                await expect(extension).to_be_disabled()
            assert await _photos_shown(desk, "#detail") == 2
            await desk.screenshot(path=str(RESULTS / "app-desk-desktop.png"), full_page=True)
            await desk.click("#ack-button")
            await expect(desk.locator("#rect-form")).to_be_visible(timeout=WAIT_MS)
            # Rectification without evidence is refused next to the field.
            await desk.click("#rect-form button[type=submit]")
            await expect(desk.locator("#rect-form-note-error")).to_have_text("请填写内容。")
            await expect(desk.locator("#rect-form-photos-error")).to_have_text("请至少上传一张照片。")
            await desk.fill("#rect-form-note", "已剪断铁链，更换为推杠式逃生锁")
            await desk.set_input_files("#rect-form-photos", [jpeg((40, 160, 60))])
            await desk.click("#rect-form button[type=submit]")
            await expect(desk.locator("#detail dd[data-state]")).to_have_attribute(
                "data-state", "rectified", timeout=WAIT_MS
            )

            # Another department's hazard typed into the URL: not found.
            await desk.goto(f"{base}/app/#/hazard/{other_hazard}")
            await expect(desk.locator(f"#detail [data-not-found='{other_hazard}']")).to_have_text(
                "未找到该隐患，或您无权查看。", timeout=WAIT_MS
            )

            # ---------------------------------------------------------- verification: fail, then pass
            await gm.click("#grid .tab[data-tab=verify]")
            to_verify = gm.locator(f"#verify-list .card[data-hazard-id='{rooftop}']")
            await expect(to_verify).to_be_visible(timeout=WAIT_MS)
            await to_verify.click()
            await expect(gm.locator("#verify-detail .thumbs img")).to_have_count(2)
            assert await _photos_shown(gm, "#verify-detail") == 2
            await gm.click("#verify-fail-form button[type=submit]")
            await expect(gm.locator("#verify-fail-form-note-error")).to_have_text("请填写内容。")
            await gm.fill("#verify-fail-form-note", "逃生锁仍需钥匙才能打开")
            await gm.set_input_files("#verify-fail-form-photos", [jpeg((90, 90, 200))])
            await gm.screenshot(path=str(RESULTS / "app-grid-verify-phone.png"), full_page=True)
            await gm.click("#verify-fail-form button[type=submit]")
            await expect(gm.locator("#verify-detail")).to_contain_text("已提交复核", timeout=WAIT_MS)

            # The desk on a phone: the case is back for a second rectification.
            pocket = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN", timezone_id="Asia/Shanghai"
            )
            desk_phone = await pocket.new_page()
            watch(desk_phone)
            await _sign_in(desk_phone, base, fire.token, "desk")
            again = desk_phone.locator(f"#open-list .card[data-hazard-id='{rooftop}']")
            await expect(again).to_contain_text("待整改", timeout=WAIT_MS)
            await again.click()
            await expect(desk_phone.locator("#rect-form")).to_be_visible(timeout=WAIT_MS)
            await desk_phone.fill("#rect-form-note", "更换为免钥匙推杠锁")
            await desk_phone.set_input_files("#rect-form-photos", [jpeg((40, 200, 200))])
            # The report's photo, the first rectification's and the grid member's failure photo, in
            # the history; the report's and the rectification's again above it.
            assert await _photos_shown(desk_phone, "#detail") == 5
            await desk_phone.screenshot(path=str(RESULTS / "app-desk-phone.png"), full_page=True)
            await desk_phone.click("#rect-form button[type=submit]")
            await expect(desk_phone.locator("#detail dd[data-state]")).to_have_attribute(
                "data-state", "rectified", timeout=WAIT_MS
            )

            await expect(to_verify).to_be_visible(timeout=WAIT_MS)
            await to_verify.click()
            await gm.click("#verify-pass")
            await expect(gm.locator("#verify-detail")).to_contain_text("已提交复核", timeout=WAIT_MS)
            await gm.click("#grid .tab[data-tab=mine]")
            await expect(gm.locator(f"#mine-list .card[data-hazard-id='{rooftop}']")).to_have_attribute(
                "data-state", "closed", timeout=WAIT_MS
            )
            await gm.screenshot(path=str(RESULTS / "app-grid-mine-phone.png"), full_page=True)

            # ---------------------------------------------------------- return (退单), operator assigns
            await desk.goto(f"{base}/app/#/hazard/{passage}")
            await expect(desk.locator("#return-form")).to_be_visible(timeout=WAIT_MS)
            await desk.fill("#return-form-reason", "x")
            await desk.click("#return-form button[type=submit]")
            await expect(desk.locator("#return-form-reason-error")).to_have_text("至少 3 字。")
            await desk.fill("#return-form-reason", "该通道属物业管理区域，非消防执法范围")
            await desk.click("#return-form button[type=submit]")
            await expect(desk.locator("#detail")).to_contain_text("已退单", timeout=WAIT_MS)

            office = await browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
            op = await office.new_page()
            watch(op)
            await _sign_in(op, base, operator.token, "queue")
            queued = op.locator(f"#queue-list .card[data-hazard-id='{passage}']")
            await expect(queued).to_contain_text("候选部门全部退回", timeout=WAIT_MS)
            await expect(op.locator("#rules-table tr[data-rule='r-blocked-fire-passage']")).to_contain_text(
                "消防"
            )
            await queued.locator("button[type=submit]").click()
            await expect(queued.locator("[id$='department_id-error']")).to_have_text("请选择部门。")
            await queued.locator("select[name=department_id]").select_option("urban_management")
            await queued.locator("textarea[name=reason]").fill("物业区域通道占用，由城管执法")
            await op.screenshot(path=str(RESULTS / "app-operator-desktop.png"), full_page=True)
            await queued.locator("button[type=submit]").click()
            await expect(queued).to_have_count(0, timeout=WAIT_MS)

            dispatches = await _wait_for(
                client,
                stack.url("dispatch") + "/api/v1/dispatches",
                {"status": "pending", "department_id": "urban_management"},
                operator.headers,
                lambda items: [d for d in items if d["hazard_id"] == passage],
            )
            assert dispatches[0]["dispatched_by"] == operator.principal
            assert dispatches[0]["note"] == "物业区域通道占用，由城管执法"

            op_pocket = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN", timezone_id="Asia/Shanghai"
            )
            op_phone = await op_pocket.new_page()
            await _sign_in(op_phone, base, operator.token, "queue")
            await op_phone.screenshot(path=str(RESULTS / "app-operator-phone.png"), full_page=True)
            # English on the toggle: the page's words change, the data stays.
            await op_phone.click("#lang-toggle")
            await expect(op_phone.locator("#page-title")).to_have_text("Operator's queue")
            await expect(
                op_phone.locator("#rules-table tr[data-rule='r-blocked-fire-passage']")
            ).to_contain_text("Blocked fire passage")
            await op_phone.screenshot(path=str(RESULTS / "app-operator-phone-en.png"), full_page=True)

            # ---------------------------------------------------------- an expired token: back to sign-in
            await desk.evaluate("() => localStorage.setItem('hazard-app-token', 'revoked-token')")
            await desk.reload()
            await expect(desk.locator("body")).to_have_attribute("data-page", "signin", timeout=WAIT_MS)
            await expect(desk.locator("#banner")).to_have_text(re.compile("登录已失效"))

            await browser.close()
        finally:
            await client.aclose()
            if browser.is_connected():
                await browser.close()
    assert problems == []


def _local(value: datetime) -> str:
    """A datetime-local field's value in the city's time (the browsers run in Asia/Shanghai)."""
    return value.astimezone(CITY).strftime("%Y-%m-%dT%H:%M")


def _city(value: datetime) -> str:
    return value.astimezone(CITY).strftime("%Y-%m-%d %H:%M")


async def test_people_pages_extensions_urging_and_notes(stack: System) -> None:
    """#16 item 2 in the browser: the desk asks for a receipt extension, the operator approves it and
    the desk shows the new deadline beside the original; the operator urges; the desk adds a progress
    note and asks for a rectification extension, which the operator refuses; all on the timeline."""
    from playwright.async_api import async_playwright, expect

    base = stack.url("reporting")
    reporter = stack.principal("reporter", grid_id=GRID)
    fire = stack.principal("department", department_id="fire")
    operator = stack.principal("operator")
    RESULTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    client = httpx.AsyncClient(timeout=30)
    made = await client.post(
        stack.url("intake") + "/api/v1/hazards",
        headers=reporter.headers,
        json={
            "report_id": str(uuid.uuid4()),
            "category": "blocked_fire_passage",
            "description": "消防通道被建筑垃圾堵塞",
            "location": {"lat": 22.622, "lon": 114.16901, "address": "六约路20号"},
            "grid_id": GRID,
            "observed_at": datetime.now(UTC).isoformat(),
        },
    )
    assert made.status_code == 201, made.text
    hazard = made.json()["hazard_id"]
    [dispatch] = await _wait_for(
        client,
        stack.url("dispatch") + "/api/v1/dispatches",
        {"status": "pending", "department_id": "fire", "limit": "200"},
        operator.headers,
        lambda items: [d for d in items if d["hazard_id"] == hazard],
    )
    current = datetime.fromisoformat(dispatch["receipt_deadline"])
    wanted = (current + timedelta(days=1)).replace(second=0, microsecond=0)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)

        def watch(page: Any) -> None:
            def on_console(m: Any) -> None:
                if m.type == "error" and "Failed to load resource" not in m.text:
                    problems.append(f"console: {m.text}")

            page.on("console", on_console)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        try:
            # ---------------------------------------------------------- the desk asks for more time to receive it
            laptop = await browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
            desk = await laptop.new_page()
            watch(desk)
            await _sign_in(desk, base, fire.token, "desk")
            await desk.goto(f"{base}/app/#/hazard/{hazard}")
            form = desk.locator("#extension-form")
            await expect(form.locator("button[type=submit]")).to_be_enabled(timeout=WAIT_MS)
            await form.locator("button[type=submit]").click()
            await expect(desk.locator("#extension-form-deadline-error")).to_have_text("请选择新的期限。")
            await expect(desk.locator("#extension-form-reason-error")).to_have_text("请填写理由（至少3字）。")
            earlier = current - timedelta(minutes=1)
            await desk.fill("#extension-form-deadline", _local(earlier))
            await form.locator("button[type=submit]").click()
            if earlier > datetime.now(UTC) + timedelta(minutes=1):
                await expect(desk.locator("#extension-form-deadline-error")).to_have_text(
                    f"新的期限必须晚于当前期限（{_city(current)}）。"
                )
            else:
                await expect(desk.locator("#extension-form-deadline-error")).to_contain_text("必须晚于")
            await desk.fill("#extension-form-deadline", _local(current + timedelta(days=40)))
            await form.locator("button[type=submit]").click()
            await expect(desk.locator("#extension-form-deadline-error")).to_have_text(
                "新的期限最多比当前期限晚 30 天。"
            )
            await desk.fill("#extension-form-deadline", _local(wanted))
            await desk.fill("#extension-form-reason", "施工单位夜间停工，次日上午到场签收")
            await form.locator("button[type=submit]").click()
            await expect(desk.locator("#extension-waiting")).to_have_text(
                "延期申请已提交，等待审批。", timeout=WAIT_MS
            )
            await expect(desk.locator("#receipt-extension")).to_have_attribute(
                "data-status", "awaiting_approval"
            )
            await expect(desk.locator("#receipt-extension")).to_contain_text(_city(wanted))
            # Nothing moved yet: the deadline in force is the first one.
            assert (
                datetime.fromisoformat(await desk.get_attribute("#receipt-deadline", "data-deadline") or "")
                == current
            )

            # ---------------------------------------------------------- the operator approves it, with a note
            office = await browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
            op = await office.new_page()
            watch(op)
            await _sign_in(op, base, operator.token, "queue")
            asked = op.locator(f"#extension-list .card[data-stage=receipt][data-hazard-id='{hazard}']")
            await expect(asked).to_contain_text("施工单位夜间停工，次日上午到场签收", timeout=WAIT_MS)
            await expect(asked).to_contain_text(f"原期限 {_city(current)} → 申请延至 {_city(wanted)}")
            await asked.locator("textarea[name=note]").fill("同意，请在新的期限前签收")
            await op.screenshot(path=str(RESULTS / "app-operator-extension-desktop.png"), full_page=True)
            await asked.locator("button[value=approve]").click()
            await expect(asked).to_have_count(0, timeout=WAIT_MS)
            decided = (
                await client.get(
                    f"{stack.url('dispatch')}/api/v1/dispatches/{dispatch['dispatch_id']}",
                    headers=operator.headers,
                )
            ).json()
            assert datetime.fromisoformat(decided["receipt_deadline"]) == wanted
            assert datetime.fromisoformat(decided["original_receipt_deadline"]) == current
            assert decided["extension_request"]["note"] == "同意，请在新的期限前签收"

            # The desk shows the new deadline and the original beside it, and both steps in the history.
            await expect(desk.locator("#receipt-extension")).to_have_attribute(
                "data-status", "approved", timeout=WAIT_MS
            )
            await expect(desk.locator("#receipt-deadline")).to_contain_text(_city(wanted))
            await expect(desk.locator("#receipt-original")).to_contain_text(f"原期限 {_city(current)}")
            await expect(
                desk.locator("#detail .timeline li[data-event='hazard.extension_decided']")
            ).to_contain_text("延期已同意", timeout=WAIT_MS)
            await expect(
                desk.locator("#detail .timeline li[data-event='hazard.extension_requested']")
            ).to_contain_text("施工单位夜间停工")
            listed = await desk.get_attribute(
                f"#pending-list .card[data-hazard-id='{hazard}'] .left", "data-deadline"
            )
            assert datetime.fromisoformat(listed or "") == wanted
            await desk.screenshot(path=str(RESULTS / "app-desk-extension-desktop.png"), full_page=True)
            await desk.click("#lang-toggle")
            await expect(desk.locator("#receipt-extension")).to_contain_text(
                "Extension approved", timeout=WAIT_MS
            )
            await expect(desk.locator("#receipt-original")).to_contain_text("Original deadline")
            await desk.click("#lang-toggle")
            await expect(desk.locator("#receipt-extension")).to_contain_text("延期已同意", timeout=WAIT_MS)

            # ---------------------------------------------------------- the operator urges it, on a phone
            op_pocket = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN", timezone_id="Asia/Shanghai"
            )
            op_phone = await op_pocket.new_page()
            watch(op_phone)
            await _sign_in(op_phone, base, operator.token, "queue")
            open_card = op_phone.locator(f"#urge-list .card[data-hazard-id='{hazard}']")
            await expect(open_card).to_have_attribute("data-stage", "receipt", timeout=WAIT_MS)
            await open_card.locator("button[type=submit]").click()
            await expect(op_phone.locator(f"#urge-{hazard}-note-error")).to_have_text("请填写内容。")
            await op_phone.fill(f"#urge-{hazard}-note", "请于今日内签收并安排清理")
            await open_card.locator("button[type=submit]").click()
            await expect(open_card).to_contain_text("已督办", timeout=WAIT_MS)
            await op_phone.screenshot(path=str(RESULTS / "app-operator-urge-phone.png"), full_page=True)

            # ---------------------------------------------------------- the desk, on a phone: receipt, a note
            pocket = await browser.new_context(
                viewport=PHONE, is_mobile=True, has_touch=True, locale="zh-CN", timezone_id="Asia/Shanghai"
            )
            desk_phone = await pocket.new_page()
            watch(desk_phone)
            await _sign_in(desk_phone, base, fire.token, "desk")
            await desk_phone.goto(f"{base}/app/#/hazard/{hazard}")
            await expect(
                desk_phone.locator("#detail .timeline li[data-event='hazard.urged']")
            ).to_contain_text("请于今日内签收并安排清理", timeout=WAIT_MS)
            await desk_phone.click("#ack-button")
            await expect(desk_phone.locator("#rect-form")).to_be_visible(timeout=WAIT_MS)
            await desk_phone.click("#note-form button[type=submit]")
            await expect(desk_phone.locator("#note-form-note-error")).to_have_text("请填写内容。")
            await desk_phone.fill("#note-form-note", "已联系物业，明早清运建筑垃圾")
            await desk_phone.set_input_files("#note-form-photos", [jpeg((220, 180, 40))])
            await desk_phone.click("#note-form button[type=submit]")
            noted = desk_phone.locator("#detail .timeline li[data-event='hazard.progress_noted']")
            await expect(noted).to_contain_text("已联系物业，明早清运建筑垃圾", timeout=WAIT_MS)
            await expect(noted.locator(".thumbs img")).to_have_count(1)

            # A rectification extension: asked here, refused by the operator; the deadline stays.
            rect_deadline = datetime.fromisoformat(
                await desk_phone.get_attribute("#rect-deadline", "data-deadline") or ""
            )
            await desk_phone.fill("#rect-extension-form-deadline", _local(rect_deadline - timedelta(hours=2)))
            await desk_phone.fill("#rect-extension-form-reason", "等待物业配合")
            await desk_phone.click("#rect-extension-form button[type=submit]")
            await expect(desk_phone.locator("#rect-extension-form-deadline-error")).to_contain_text(
                "必须晚于"
            )
            asked_rect = (rect_deadline + timedelta(days=2)).replace(second=0, microsecond=0)
            await desk_phone.fill("#rect-extension-form-deadline", _local(asked_rect))
            await desk_phone.click("#rect-extension-form button[type=submit]")
            await expect(desk_phone.locator("#rect-extension-waiting")).to_be_visible(timeout=WAIT_MS)
            rect_card = op.locator(
                f"#extension-list .card[data-stage=rectification][data-hazard-id='{hazard}']"
            )
            await expect(rect_card).to_contain_text("等待物业配合", timeout=WAIT_MS)
            await rect_card.locator("textarea[name=note]").fill("整改期限不变，请按期完成")
            await rect_card.locator("button[value=refuse]").click()
            await expect(rect_card).to_have_count(0, timeout=WAIT_MS)
            await expect(desk_phone.locator("#rectification-extension")).to_have_attribute(
                "data-status", "refused", timeout=WAIT_MS
            )
            await expect(desk_phone.locator("#rect-original")).to_have_count(0)
            assert (
                datetime.fromisoformat(
                    await desk_phone.get_attribute("#rect-deadline", "data-deadline") or ""
                )
                == rect_deadline
            )
            refusal = desk_phone.locator(
                "#detail .timeline li[data-event='hazard.extension_decided']", has_text="延期被驳回"
            )
            await expect(refusal).to_contain_text("整改期限不变，请按期完成", timeout=WAIT_MS)
            # Every step is in the history: requests, decisions, the urging, the note.
            events = await desk_phone.eval_on_selector_all(
                "#detail .timeline li", "(items) => items.map((i) => i.dataset.event)"
            )
            for kind, times in (
                ("hazard.extension_requested", 2),
                ("hazard.extension_decided", 2),
                ("hazard.urged", 1),
                ("hazard.progress_noted", 1),
            ):
                assert events.count(kind) == times, (kind, events)
            await _photos_shown(desk_phone, "#detail .timeline")
            await desk_phone.screenshot(path=str(RESULTS / "app-desk-timeline-phone.png"), full_page=True)

            await browser.close()
        finally:
            await client.aclose()
            if browser.is_connected():
                await browser.close()
    assert problems == []
