"""Predictions answered before routing (`app.predict_early`): the same bytes as the route,
the same refusals (which the route itself sends), the same rate budget, and the request's
route and principal kept for the access log and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.http_cache import ANSWERED_BEFORE_ROUTING
from app.services.credentials import Role
from app.settings import Settings
from tests.ml_support import FILM, app_settings, serve, tmdb_items, trained_artifacts
from tests.security_support import bearer, user_token

PROBLEM = "application/problem+json"
MODELS = ("revenue", "hit", "engagement")


def answered() -> float:
    value: float = ANSWERED_BEFORE_ROUTING.labels("200")._value.get()
    return value


@pytest.fixture(scope="module")
def settings(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    root, _ = trained_artifacts(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("predict-early")
    return app_settings(mongodb_uri, root, workdir), workdir


@pytest.fixture
async def api(settings: tuple[Settings, Path]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings[0]) as http:
        yield http


@pytest.mark.parametrize("model", MODELS)
async def test_answers_are_the_routes_bytes(api: httpx.AsyncClient, model: str) -> None:
    films: list[dict[str, Any]] = [FILM, *tmdb_items(3)]
    # The first request to a path is routed (the middleware learns the route from it).
    first = await api.post(f"/v1/predict/{model}", json={"items": films[:1]})
    assert first.status_code == 200
    for body in ({"items": films[:1]}, {"items": films}):
        before = answered()
        early = await api.post(f"/v1/predict/{model}", json=body)
        assert answered() == before + 1, "not answered before routing"
        # A query string sends the request through the route.
        routed = await api.post(f"/v1/predict/{model}?routed=1", json=body)
        assert answered() == before + 1
        assert early.status_code == routed.status_code == 200, early.text
        assert early.content == routed.content
        assert early.headers["content-type"] == routed.headers["content-type"]
        assert early.headers["x-request-id"] != routed.headers["x-request-id"]


async def test_interval_level_is_honoured(api: httpx.AsyncClient) -> None:
    body = {"items": [FILM], "interval_level": 0.95}
    early = await api.post("/v1/predict/revenue", json=body)
    routed = await api.post("/v1/predict/revenue?routed=1", json=body)
    assert early.json() == routed.json()
    assert early.json()["interval_level"] == 0.95


async def test_refusals_come_from_the_route(api: httpx.AsyncClient) -> None:
    before = answered()
    bad = await api.post("/v1/predict/revenue", json={"items": [{**FILM, "budget": -5}]})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith(PROBLEM)
    assert "budget" in bad.text
    empty = await api.post("/v1/predict/engagement", json={"items": []})
    assert empty.status_code == 422
    not_json = await api.post(
        "/v1/predict/hit", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    level = await api.post("/v1/predict/revenue", json={"items": [FILM], "interval_level": 0.85})
    assert level.status_code == 422 and "0.85" in level.text
    anonymous = await api.post(
        "/v1/predict/revenue", json={"items": [FILM]}, headers={"X-API-Key": ""}
    )
    assert anonymous.status_code == 401
    assert answered() == before


async def test_roles_are_checked(api: httpx.AsyncClient, settings: tuple[Settings, Path]) -> None:
    # No admin key (the client's default), so the bearer token decides.
    viewer = bearer(await user_token(settings[0], "early-viewer", Role.viewer)) | {"X-API-Key": ""}
    refused = await api.post("/v1/predict/hit", json={"items": [FILM]}, headers=viewer)
    assert refused.status_code == 403
    predictor = bearer(await user_token(settings[0], "early-predictor", Role.predictor)) | {
        "X-API-Key": ""
    }
    before = answered()
    ok = await api.post("/v1/predict/hit", json={"items": [FILM]}, headers=predictor)
    assert ok.status_code == 200 and answered() == before + 1


async def test_access_log_keeps_route_and_principal(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        await api.post("/v1/predict/revenue", json={"items": [FILM]})  # routed: the first
        before = answered()
        response = await api.post("/v1/predict/revenue", json={"items": [FILM]})
    assert response.status_code == 200 and answered() == before + 1
    lines = [r for r in caplog.records if getattr(r, "route", None) == "/v1/predict/revenue"]
    assert len(lines) == 2, [(getattr(r, "route", None), r.getMessage()) for r in caplog.records]
    assert getattr(lines[-1], "principal", "").startswith("admin_key")
    metrics = (await api.get("/metrics")).text
    assert 'route="/v1/predict/revenue"' in metrics


async def post_in_turn(
    uri: str, factory: pytest.TempPathFactory, bodies: list[dict[str, Any]]
) -> list[int]:
    """The status of each body posted in turn to `/v1/predict/revenue` by a credential with
    three requests a minute."""
    root, _ = trained_artifacts(factory)
    tight = app_settings(uri, root, factory.mktemp("early-rate")).model_copy(
        update={"rate_limit_per_minute": 3}
    )
    async with serve(tight) as http:
        return [(await http.post("/v1/predict/revenue", json=body)).status_code for body in bodies]


async def test_the_rate_budget_is_spent_and_enforced(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    codes = await post_in_turn(mongodb_uri, tmp_path_factory, [{"items": [FILM]}] * 5)
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]


async def test_a_request_the_route_answers_is_charged_once(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    good = {"items": [FILM]}
    # 0.85 passes validation but is no level of the card: the service refuses it, and the
    # route answers the 422.
    odd_level = {"items": [FILM], "interval_level": 0.85}
    codes = await post_in_turn(mongodb_uri, tmp_path_factory, [good, odd_level, good, good])
    assert codes == [200, 422, 200, 429]
