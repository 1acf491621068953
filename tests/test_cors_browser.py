"""CORS in a real browser: a page served from another origin on the loopback (its own tiny
server, another port) calls the API with an API key and shows what it got. It works when its
origin is in CORS_ORIGINS (including reading the exposed headers and a 304 to its own
If-None-Match) and is blocked by the browser when it is not."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.main import create_app
from app.services.movies_store import upsert_movies
from app.services.normalize import to_movie
from app.settings import Settings
from tests.analytics_support import API_KEY
from tests.browser_support import chromium, live_server, offline_context

# The page a frontend team would write: no framework, the key from the query string.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Frontend</title></head>
<body><pre id="out">pending</pre>
<script>
const params = new URLSearchParams(location.search);
const url = params.get("api") + "/v1/analytics/summary?genre=Drama";
const headers = {"X-API-Key": params.get("key")};
const out = document.getElementById("out");
fetch(url, {headers})
  .then(async (res) => {
    const body = await res.json();
    const etag = res.headers.get("ETag");
    const again = await fetch(url, {headers: {...headers, "If-None-Match": etag}});
    out.textContent = JSON.stringify({
      status: res.status,
      films: body.films,
      etag: etag,
      version: res.headers.get("X-Data-Version"),
      requestId: res.headers.get("X-Request-Id"),
      revalidated: again.status,
    });
  })
  .catch((err) => { out.textContent = "blocked: " + err.name; });
</script></body></html>
"""


def frontend() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    return app


def film(movie_id: int, genre: str) -> Any:
    return to_movie(
        {
            "id": movie_id,
            "title": f"Film {movie_id}",
            "release_date": "2010-05-01",
            "genres": [genre],
            "vote_count": 10,
        },
        "tmdb-api",
    )


async def run_page(front: str, api: str) -> str:
    """What the page shows once its script is done."""
    async with chromium() as browser, offline_context(browser, [front, api]) as (context, _):
        page = await context.new_page()
        await page.goto(f"{front}/?api={api}&key={API_KEY}")
        out = page.locator("#out")
        await page.wait_for_function(
            "document.getElementById('out').textContent !== 'pending'", timeout=20_000
        )
        return str(await out.inner_text())


async def test_a_page_on_an_allowed_origin_calls_the_api(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    await upsert_movies(db, [film(1, "Drama"), film(2, "Drama"), film(3, "Comedy")])
    with live_server(frontend()) as front:
        api_settings = settings.model_copy(
            update={"admin_api_key": API_KEY, "cors_origins": f"http://example.org,{front}"}
        )
        with live_server(create_app(api_settings)) as api:
            shown = json.loads(await run_page(front, api))
            async with httpx.AsyncClient(base_url=api, headers={"X-API-Key": API_KEY}) as http:
                direct = await http.get("/v1/analytics/summary?genre=Drama")
    assert shown["status"] == 200
    assert shown["films"] == direct.json()["films"] == 2
    # Headers the page could read only because they are exposed.
    assert shown["etag"] == direct.headers["etag"]
    assert shown["version"] == direct.headers["x-data-version"]
    assert shown["requestId"]
    assert shown["revalidated"] == 304


async def test_a_page_on_another_origin_is_blocked(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    await upsert_movies(db, [film(1, "Drama")])
    with live_server(frontend()) as front:
        for origins in ("http://example.org", ""):
            api_settings = settings.model_copy(
                update={"admin_api_key": API_KEY, "cors_origins": origins}
            )
            with live_server(create_app(api_settings)) as api:
                assert await run_page(front, api) == "blocked: TypeError", origins
