"""The HTML status page in a real browser (Debian's chromium driven by Playwright): the
overall status, one bar per day with its tooltip, the subscribe form, and no horizontal
scrolling on a phone. Screenshots go to test-artifacts/ at the repository root."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import async_playwright

from helpers import Server, Target, api, server_store, wait_for
from store_helpers import sketch
from tocsin.models import Rollup

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TITLE = re.compile(r"\d{4}-\d\d-\d\d: (no data|[\d.]+% uptime)(, \d+ incidents?)?")
VIEWPORTS = {"desktop": (1280, 900), "phone": (390, 844)}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (scripts/setup.sh installs it)", pytrace=False)
    ARTIFACTS.mkdir(exist_ok=True)
    s = Server(tmp_path_factory.mktemp("status-browser") / "data")
    s.start()
    yield s
    s.kill()


async def test_the_status_page_in_a_browser_on_a_desktop_and_a_phone(
    shared: Server, http: aiohttp.ClientSession, target: Target
) -> None:
    ids = []
    for name in ("api-1", "pg-primary-eu-with-a-rather-long-internal-name"):
        body = {"name": name, "type": "uptime", "url": target.url, "interval": 1, "timeout": 2}
        code, check = await api(http, shared, "POST", "/api/checks/", json=body)
        assert code == 200, check
        ids.append(check["id"])
    code, page = await api(
        http,
        shared,
        "POST",
        "/api/status-pages/",
        json={
            "name": "Acme <Cloud>",
            "slug": "acme-browser",
            "description": "Everything Acme runs, in one place.",
            "logo_url": "https://example.invalid/logo.png",
            "components": [
                {"check_id": ids[0], "name": "Public API", "section": "Edge"},
                {"check_id": ids[1], "name": "Database (EU)", "section": "Data"},
            ],
        },
    )
    assert code == 200, page

    async def all_up() -> bool:
        code, doc = await api(http, shared, "GET", "/api/status-pages/public/acme-browser")
        return code == 200 and {c["status"] for c in doc["components"]} == {"UP"}

    await wait_for(all_up, timeout=20)
    # Yesterday: 43.2 s down in one incident (99.95%).
    yesterday = (int(time.time()) // 86_400 - 1) * 86_400
    store = server_store(shared)
    await store.open(migrate=False)
    try:
        # The check existed then (the bars count no time before a check).
        async with store._write() as c:
            await c.execute(
                "UPDATE checks SET created_at = ? WHERE id = ?", yesterday - 86_400, ids[0]
            )
        down = Rollup(ids[0], yesterday * 1000, 60_000, 1, 1, 0, 43_200, 0, 1, sketch((10, 1)))
        await store.write_batch([], [], [down])
    finally:
        await store.close()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for label, (width, height) in VIEWPORTS.items():
                context = await browser.new_context(
                    viewport={"width": width, "height": height}, java_script_enabled=False
                )
                tab = await context.new_page()
                resp = await tab.goto(f"{shared.base}/status/acme-browser")
                assert resp is not None and resp.status == 200
                assert await tab.title() == "Acme <Cloud> status: All systems operational"
                overall = tab.locator("#overall")
                assert (await overall.inner_text()).strip().endswith("All systems operational")
                assert await tab.locator("header").count() == 1
                assert await tab.locator("main").count() == 1
                assert await tab.locator("footer").count() == 1
                assert await tab.locator("a.skip[href='#content']").count() == 1
                assert await tab.locator("header img").get_attribute("alt") == "Acme <Cloud> logo"
                sections = await tab.locator("main h2").all_inner_texts()
                assert "Edge" in sections and "Data" in sections
                bars = tab.locator("ol.bars")
                assert await bars.count() == 2
                assert await bars.first.locator("li").count() == 90
                days = bars.first.locator("li")
                day = time.strftime("%Y-%m-%d", time.gmtime(yesterday))
                assert await days.nth(88).get_attribute("title") == (
                    f"{day}: 99.95% uptime, 1 incident"
                )
                today = await days.last.get_attribute("title")
                assert today is not None and TITLE.fullmatch(today), today
                form = tab.locator("form[method='post'][action='/status/acme-browser/subscribe']")
                assert await form.count() == 1
                email = form.locator("input[type='email'][name='email']")
                assert await email.get_attribute("required") is not None
                feed = tab.locator("link[rel='alternate'][type='application/atom+xml']")
                assert await feed.get_attribute("href") == (
                    "/api/status-pages/public/acme-browser/feed.atom"
                )
                scroll_width = await tab.evaluate("document.documentElement.scrollWidth")
                client_width = await tab.evaluate("document.documentElement.clientWidth")
                assert scroll_width <= client_width, (label, scroll_width, client_width)
                await tab.screenshot(
                    path=str(ARTIFACTS / f"status-page-{label}.png"), full_page=True
                )
                await context.close()
        finally:
            await browser.close()
