"""Swagger UI and ReDoc render in a real headless Chromium that can reach nothing but the
service: their assets are self-hosted, no CDN."""

from __future__ import annotations

from app.main import create_app
from app.settings import Settings
from tests.browser_support import chromium, live_server, offline_context

TITLE = "TMDB Analytics Service"


async def test_swagger_ui_renders_offline(settings: Settings) -> None:
    with live_server(create_app(settings)) as base:
        async with chromium() as browser, offline_context(browser, [base]) as (context, blocked):
            page = await context.new_page()
            await page.goto(f"{base}/docs")
            title = page.locator(".swagger-ui .info .title")
            await title.wait_for(timeout=15_000)
            assert TITLE in await title.inner_text()
            # The operations are drawn from /openapi.json, and the Authorize button is there.
            await page.locator(".opblock").first.wait_for(timeout=15_000)
            assert await page.locator(".opblock").count() > 10
            assert await page.locator("button.authorize").count() == 1
            assert blocked == []


async def test_redoc_renders_offline(settings: Settings) -> None:
    with live_server(create_app(settings)) as base:
        async with chromium() as browser, offline_context(browser, [base]) as (context, blocked):
            page = await context.new_page()
            await page.goto(f"{base}/redoc")
            heading = page.locator("h1", has_text=TITLE)
            await heading.first.wait_for(timeout=20_000)
            assert await page.locator("[data-section-id^='operation/']").count() > 10
            assert blocked == []
