"""HEAD wherever GET is served (`app.head_requests`): the GET's status and headers without a
body, through the same credential, cache and early-answer code, logged and counted as HEAD
under the route template; 405 where a path has no GET."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.analytics_support import Catalogue, app_settings, serve

PROBLEM = "application/problem+json"
FILM = 19995  # Avatar, a real train film

# Headers that differ between any two answers (the first GET of an aggregate computes it,
# the HEAD after it finds it cached).
PER_REQUEST = {"x-request-id", "date", "x-analytics-cache"}


@pytest.fixture(scope="module")
async def api(
    catalogue: Catalogue, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path_factory.mktemp("head"))
    async with serve(settings) as http:
        for _ in range(600):  # the first catalogue snapshot is built in the background
            if (await http.get("/v1/analytics/summary")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        yield http


def same_head(get: httpx.Response, head: httpx.Response) -> None:
    assert head.status_code == get.status_code
    assert head.content == b""
    strip = {k: v for k, v in get.headers.items() if k not in PER_REQUEST}
    assert {k: v for k, v in head.headers.items() if k not in PER_REQUEST} == strip


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/openapi.json",
        f"/v1/movies/{FILM}",  # answered before routing on GET
        f"/v1/movies/{FILM}?routed=1",  # a query string goes through the route
        "/v1/analytics/genres?year_from=2000",  # an answer of the analytics cache
        "/ui",
    ],
)
async def test_head_gives_the_gets_status_and_headers_without_a_body(
    api: httpx.AsyncClient, path: str
) -> None:
    get = await api.get(path)
    assert get.status_code == 200 and get.content, get.text
    same_head(get, await api.head(path))


async def test_refusals_and_conditional_answers_are_the_gets(api: httpx.AsyncClient) -> None:
    for headers in ({"X-API-Key": ""}, {"X-API-Key": "not-a-key"}):
        get = await api.get(f"/v1/movies/{FILM}", headers=headers)
        assert get.status_code == 401 and get.headers["content-type"].startswith(PROBLEM)
        same_head(get, await api.head(f"/v1/movies/{FILM}", headers=headers))
    same_head(await api.get("/v1/movies/999999999"), await api.head("/v1/movies/999999999"))
    tag = (await api.get("/v1/analytics/summary")).headers["etag"]
    cached = await api.head("/v1/analytics/summary", headers={"If-None-Match": tag})
    assert cached.status_code == 304 and cached.content == b""


async def test_a_path_without_get_still_refuses_head(api: httpx.AsyncClient) -> None:
    head = await api.head("/v1/predict/revenue")
    assert head.status_code == 405 and head.content == b""
    assert head.headers["allow"] == "POST"
    assert (await api.head("/v1/nothing-here")).status_code == 404


async def test_head_is_logged_and_counted_as_head_under_the_route(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        assert (await api.head(f"/v1/movies/{FILM}")).status_code == 200
    line = [r for r in caplog.records if getattr(r, "method", None) == "HEAD"][-1]
    assert getattr(line, "route", None) == "/v1/movies/{movie_id}"
    assert getattr(line, "principal", "").startswith("admin_key")
    metrics = (await api.get("/metrics")).text
    assert 'method="HEAD",route="/v1/movies/{movie_id}",status="200"' in metrics
