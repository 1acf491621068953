"""The dashboard page in a real headless Chromium that can reach nothing but the service, under
the page's own content policy: log in, the starter dashboard drawn from the API (numbers
checked against it), add a widget and find it saved after a reload, PNG and CSV downloads,
a share link opened by another user, the layout at 375 and 1440 px, and the exported file
opened from disk with no network at all."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.main import create_app
from app.security import Role
from app.services import credentials
from app.settings import Settings
from tests.browser_support import chromium, live_server, offline_context
from tests.dashboard_support import PASSWORD, load_films
from tests.security_support import security_settings

FILMS = 60
WIDGETS = 7  # the starter dashboard
RENDERED = 'body[data-rendered="true"]'
# Init scripts run outside the page's content policy: they record any violation of it.
WATCH_POLICY = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', e => "
    "window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@pytest.fixture
async def site(
    settings: Settings, db: AsyncDatabase[Document], tmp_path: Path
) -> AsyncIterator[str]:
    """The service on a loopback port over 60 films, with viewers alice and bob."""
    await load_films(db, tmp_path, FILMS)
    for name in ("alice", "bob"):
        await credentials.create_user(db, name, Role.viewer, PASSWORD)
    app = create_app(security_settings(settings, rate_limit_per_minute=100_000))
    with live_server(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(150):  # the first snapshot holds the films (it builds at start)
                ready = (await http.get("/ready")).json()
                if ready.get("checks", {}).get("analytics") == "ok":
                    break
        yield base


async def token_for(base: str, name: str) -> str:
    async with httpx.AsyncClient(base_url=base) as http:
        answer = await http.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
        answer.raise_for_status()
        return str(answer.json()["access_token"])


async def api_get(base: str, token: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=base) as http:
        answer = await http.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        return answer.json()


async def open_page(context: BrowserContext, errors: list[str]) -> Page:
    await context.add_init_script(WATCH_POLICY)
    page = await context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


async def log_in(page: Page, base: str, name: str, path: str = "/ui") -> None:
    await page.goto(base + path)
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await page.wait_for_selector(RENDERED, state="attached", timeout=30_000)


async def widget_states(page: Page) -> list[str]:
    states: list[str] = await page.eval_on_selector_all(
        ".widget", "els => els.map(e => e.dataset.state)"
    )
    return states


async def violations(page: Page) -> list[str]:
    found: list[str] = await page.evaluate("window.__violations")
    return found


async def test_log_in_edit_save_share(site: str, tmp_path: Path) -> None:
    errors: list[str] = []
    async with (
        chromium() as browser,
        offline_context(browser, [site], viewport={"width": 1440, "height": 900},
                        accept_downloads=True) as (context, blocked),
    ):  # fmt: skip
        page = await open_page(context, errors)
        await log_in(page, site, "alice")

        # The starter dashboard, every chart drawn from the API.
        assert await widget_states(page) == ["ready"] * WIDGETS
        assert await page.locator(".widget .js-plotly-plot").count() == WIDGETS - 1
        assert await page.locator(".widget table").count() == 1
        token = await page.evaluate("sessionStorage.getItem('tmdb.token')")
        genres = await api_get(site, token, "/v1/analytics/genres")
        drawn = await page.evaluate(
            """() => {
              const gd = document.querySelector('[data-widget="0"] .js-plotly-plot');
              return {x: [...gd.data[0].x], y: [...gd.data[0].y]};
            }"""
        )
        assert drawn["x"] == [g["genre"] for g in genres["items"]]
        assert drawn["y"] == [g["count"] for g in genres["items"]]
        assert sum(drawn["y"]) >= FILMS  # films count once per genre they have
        top = await api_get(site, token, "/v1/analytics/top?metric=revenue&n=10")
        titles = await page.locator('[data-widget="6"] tbody tr td:first-child').all_inner_texts()
        assert titles == [i["title"] for i in top["items"]]

        # Downloads: the chart as PNG (plotly's own export), the data as CSV.
        async with page.expect_download() as png_info:
            await page.click('[data-widget="0"] button[title="Download the chart as PNG"]')
        png = await asyncio.to_thread(Path(await (await png_info.value).path()).read_bytes)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        async with page.expect_download() as csv_info:
            await page.click('[data-widget="0"] button[title="Download the data as CSV"]')
        download = await csv_info.value
        assert download.suggested_filename == "films-per-genre.csv"
        text = await asyncio.to_thread(Path(await download.path()).read_text)
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0][:2] == ["genre", "count"]
        assert [(r[0], int(r[1])) for r in rows[1:]] == [
            (g["genre"], g["count"]) for g in genres["items"]
        ]

        # Add a widget, save (If-Match), reload: it is there.
        await page.click("#add-widget")
        await page.select_option("#w-endpoint", "/v1/analytics/distribution")
        await page.select_option("#w-chart", "histogram")
        await page.fill("#w-title", "Budgets")
        await page.select_option('#w-params [data-param="field"]', "budget")
        await page.click("#add-form button[type=submit]")
        await page.wait_for_selector(RENDERED, state="attached")
        assert await widget_states(page) == ["ready"] * (WIDGETS + 1)
        await expect(page.locator("#status")).to_have_text("Unsaved changes")
        await page.click("#save")
        await expect(page.locator("#status")).to_have_text("Saved · version 2")
        await page.reload()
        await page.wait_for_selector(RENDERED, state="attached")
        assert await widget_states(page) == ["ready"] * (WIDGETS + 1)
        assert await page.locator('[data-widget="7"] h2').inner_text() == "Budgets"
        saved = await api_get(site, token, "/v1/dashboards")
        dashboard_id = saved["items"][0]["id"]
        stored = await api_get(site, token, f"/v1/dashboards/{dashboard_id}")
        assert stored["version"] == 2
        assert stored["widgets"][-1]["params"]["field"] == "budget"

        # Reorder and remove, then save again.
        await page.click('[data-widget="7"] button[title="Move up"]')
        await page.wait_for_selector(RENDERED, state="attached")
        assert await page.locator('[data-widget="6"] h2').inner_text() == "Budgets"
        await page.click('[data-widget="0"] button[title="Remove widget"]')
        await page.wait_for_selector(RENDERED, state="attached")
        await page.click("#save")
        await expect(page.locator("#status")).to_have_text("Saved · version 3")
        stored = await api_get(site, token, f"/v1/dashboards/{dashboard_id}")
        assert [w["title"] for w in stored["widgets"]][-2:] == [
            "Budgets",
            "Top 10 films by revenue",
        ]

        # Global filters narrow every widget.
        await page.fill("#f-year_from", "2000")
        await page.click("#filters-form button[type=submit]")
        await page.wait_for_selector(RENDERED, state="attached")
        urls = await page.eval_on_selector_all(".widget", "els => els.map(e => e.dataset.url)")
        assert all("year_from=2000" in u for u in urls), urls
        await page.click("#save")
        await expect(page.locator("#status")).to_have_text("Saved · version 4")

        # Share, and open the link as another user.
        await page.click("#share")
        await expect(page.locator("#share-panel")).to_be_visible()
        link = await page.input_value("#share-url")
        assert link.startswith(f"{site}/ui/shared/")
        assert await violations(page) == []

    async with (
        chromium() as browser,
        offline_context(browser, [site], viewport={"width": 1440, "height": 900}) as (
            context,
            blocked_bob,
        ),
    ):
        page = await open_page(context, errors)
        await log_in(page, site, "bob", link.removeprefix(site))
        assert await page.locator("#dash-title").inner_text() == "The catalogue at a glance"
        assert await widget_states(page) == ["ready"] * WIDGETS
        assert await page.locator("#save").is_hidden()
        assert await page.locator("#add-widget").is_hidden()
        assert await page.locator(".widget button[title='Remove widget']").count() == 0
        bob_token = await page.evaluate("sessionStorage.getItem('tmdb.token')")
        assert (await api_get(site, bob_token, "/v1/dashboards"))["items"] == []
        assert await violations(page) == []
    assert blocked == [] and blocked_bob == []
    assert errors == []


async def test_layout_at_375_and_1440(site: str) -> None:
    token = await token_for(site, "alice")
    errors: list[str] = []
    async with chromium() as browser:
        for width, height in ((375, 812), (1440, 900)):
            async with offline_context(
                browser, [site], viewport={"width": width, "height": height}
            ) as (context, blocked):
                await context.add_init_script(
                    f"sessionStorage.setItem('tmdb.token', {json.dumps(token)});"
                    "sessionStorage.setItem('tmdb.user', 'alice');"
                )
                page = await open_page(context, errors)
                await page.goto(f"{site}/ui")
                await page.wait_for_selector(RENDERED, state="attached", timeout=30_000)
                layout = await page.evaluate(
                    """() => ({
                      viewport: window.innerWidth,
                      scroll: document.documentElement.scrollWidth,
                      body: document.body.scrollWidth,
                      rights: [...document.querySelectorAll('body *')]
                        .filter(e => e.getClientRects().length)
                        .map(e => Math.ceil(e.getBoundingClientRect().right)),
                      lefts: [...document.querySelectorAll('.widget')]
                        .map(e => Math.round(e.getBoundingClientRect().left)),
                    })"""
                )
                assert layout["scroll"] <= layout["viewport"], (width, layout["scroll"])
                assert layout["body"] <= layout["viewport"], width
                assert max(layout["rights"]) <= layout["viewport"], width
                columns = len(set(layout["lefts"]))
                assert columns == (1 if width < 900 else 2), (width, columns)
                assert await violations(page) == []
                assert blocked == []
    assert errors == []


async def test_exported_file_opens_offline(site: str, tmp_path: Path) -> None:
    token = await token_for(site, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=site, headers=headers) as http:
        items = (await http.post("/v1/dashboards/default")).json()["items"]
        exported = await http.get(f"/v1/dashboards/{items[0]['id']}/export")
        assert exported.status_code == 200
        genres = (await http.get("/v1/analytics/genres")).json()
    path = tmp_path / "dashboard.html"
    path.write_text(exported.text)
    errors: list[str] = []
    # Only the file itself may load: any request to a network is aborted and recorded.
    async with chromium() as browser, offline_context(browser, ["file://"]) as (context, blocked):
        page = await open_page(context, errors)
        await page.goto(path.as_uri())
        await page.wait_for_selector(RENDERED, state="attached", timeout=30_000)
        assert await widget_states(page) == ["ready"] * WIDGETS
        drawn = await page.evaluate(
            "() => [...document.querySelector('[data-widget=\"0\"] .js-plotly-plot').data[0].y]"
        )
        assert drawn == [g["count"] for g in genres["items"]]
        assert await violations(page) == []
    assert blocked == [] and errors == []


async def test_a_stale_save_is_refused_not_overwritten(site: str) -> None:
    """Two tabs edit the same dashboard: the second save gets 412 and says so."""
    token = await token_for(site, "alice")
    errors: list[str] = []
    async with chromium() as browser:
        pages = []
        for _ in range(2):
            context = await browser.new_context(viewport={"width": 1440, "height": 900})
            await context.add_init_script(
                f"sessionStorage.setItem('tmdb.token', {json.dumps(token)});"
                "sessionStorage.setItem('tmdb.user', 'alice');"
            )
            page = await open_page(context, errors)
            await page.goto(f"{site}/ui")
            await page.wait_for_selector(RENDERED, state="attached", timeout=30_000)
            pages.append(page)
        first, second = pages
        await first.fill("#dash-name", "Renamed in the first tab")
        await first.click("#save")
        await expect(first.locator("#status")).to_have_text("Saved · version 2")
        await second.fill("#dash-name", "Renamed in the second tab")
        await second.click("#save")
        await expect(second.locator("#notice")).to_contain_text("Someone saved this dashboard")
        await expect(second.locator("#status")).to_have_text("Unsaved changes")
        listed = await api_get(site, token, "/v1/dashboards")
        assert [d["name"] for d in listed["items"]] == ["Renamed in the first tab"]
        assert listed["items"][0]["version"] == 2
    # The 412 itself shows in the console as a failed request; nothing else went wrong.
    assert all("412" in e for e in errors), errors
