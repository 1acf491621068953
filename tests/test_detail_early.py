"""Film details answered before routing (`app.detail_early`): the route's bytes, the route's
refusals (404, 422, 401, 429, which the route itself sends), the same rate budget, and the
request's route and principal kept for the access log and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.detail_early import movie_id
from app.http_cache import ANSWERED_BEFORE_ROUTING
from app.routers.movies import MAX_ID
from app.services.credentials import Role
from tests.analytics_support import Catalogue, app_settings, serve
from tests.security_support import bearer, user_token

PROBLEM = "application/problem+json"
IDS = (19995, 285, 49026, 49529, 559)  # real train films: Avatar, Pirates 3, ...


def answered() -> float:
    value: float = ANSWERED_BEFORE_ROUTING.labels("200")._value.get()
    return value


@pytest.fixture(scope="module")
async def api(
    catalogue: Catalogue, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path_factory.mktemp("detail"))
    async with serve(settings) as http:
        # The first detail request is routed: the middleware learns the route from it.
        assert (await http.get(f"/v1/movies/{IDS[0]}")).status_code == 200
        yield http


def test_only_plain_ids_in_the_routes_range_are_taken() -> None:
    assert movie_id("/v1/movies/19995") == 19995
    assert movie_id(f"/v1/movies/{MAX_ID}") == MAX_ID
    for path in (
        "/v1/movies/0",
        "/v1/movies/007",
        "/v1/movies/-5",
        "/v1/movies/+5",
        "/v1/movies/1.0",
        "/v1/movies/\u0661\u0662",  # Arabic-Indic digits: str.isdigit says yes
        f"/v1/movies/{MAX_ID + 1}",
        "/v1/movies/19995/similar",
        "/v1/movies/",
        "/v1/movies",
        "/v1/analytics/19995",
    ):
        assert movie_id(path) is None, path


async def test_answers_are_the_routes_bytes(api: httpx.AsyncClient) -> None:
    for film in IDS:
        before = answered()
        early = await api.get(f"/v1/movies/{film}")
        assert answered() == before + 1, "not answered before routing"
        routed = await api.get(f"/v1/movies/{film}", params={"routed": "1"})
        assert answered() == before + 1  # a query string goes through the route
        assert early.status_code == routed.status_code == 200, early.text
        assert early.content == routed.content
        assert early.json()["id"] == film
        assert early.headers["content-type"] == routed.headers["content-type"]
        assert early.headers["x-request-id"] != routed.headers["x-request-id"]


async def test_refusals_come_from_the_route(api: httpx.AsyncClient) -> None:
    before = answered()
    missing = await api.get("/v1/movies/999999999")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(PROBLEM)
    too_big = await api.get(f"/v1/movies/{MAX_ID + 1}")
    assert too_big.status_code == 422 and too_big.headers["content-type"].startswith(PROBLEM)
    anonymous = await api.get(f"/v1/movies/{IDS[1]}", headers={"X-API-Key": ""})
    assert anonymous.status_code == 401
    wrong = await api.get(f"/v1/movies/{IDS[1]}", headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401
    assert answered() == before
    # The leading-zero spelling is the route's to answer, and it answers it as always.
    padded = await api.get(f"/v1/movies/0{IDS[1]}")
    assert padded.status_code == 200 and padded.json()["id"] == IDS[1]
    assert answered() == before


async def test_a_viewer_token_is_answered_early(
    api: httpx.AsyncClient, catalogue: Catalogue, mongodb_uri: str, tmp_path: Path
) -> None:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path)
    viewer = bearer(await user_token(settings, "detail-viewer", Role.viewer)) | {"X-API-Key": ""}
    before = answered()
    ok = await api.get(f"/v1/movies/{IDS[2]}", headers=viewer)
    assert ok.status_code == 200 and answered() == before + 1


async def test_access_log_keeps_route_and_principal(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        before = answered()
        response = await api.get(f"/v1/movies/{IDS[3]}")
    assert response.status_code == 200 and answered() == before + 1
    lines = [r for r in caplog.records if getattr(r, "route", None) == "/v1/movies/{movie_id}"]
    assert lines and getattr(lines[-1], "principal", "").startswith("admin_key")
    metrics = (await api.get("/metrics")).text
    assert 'route="/v1/movies/{movie_id}"' in metrics


async def test_the_rate_budget_is_spent_once_and_the_route_answers_the_429(
    catalogue: Catalogue, mongodb_uri: str, tmp_path: Path
) -> None:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path, rate_limit_per_minute=4)
    async with serve(settings) as http:
        # The first is routed; the 404 is tried early, given back, and charged by the route.
        paths = [IDS[0], 999_999_999, IDS[1], IDS[2]]
        statuses = [(await http.get(f"/v1/movies/{film}")).status_code for film in paths]
        assert statuses == [200, 404, 200, 200]  # four tokens, one each
        before = answered()
        limited = await http.get(f"/v1/movies/{IDS[0]}")
        assert limited.status_code == 429 and "retry-after" in limited.headers
        assert answered() == before
