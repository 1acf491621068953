"""Limits and the one error shape: rate limits (429 + Retry-After), body size (413), unknown
routes and methods, validation, unexpected exceptions and the response deadline, all as
RFC 9457 problem+json with a request id."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.limits import RequestRateLimiter, client_ip
from app.observability import JsonFormatter
from app.security import Role
from app.services import credentials
from app.settings import Settings
from tests.security_support import (
    ADMIN_KEY,
    api_key,
    client_at,
    make_app,
    running,
    security_settings,
    serve,
)
from tests.support import assert_problem

PROBLEM = "application/problem+json"


def broken_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/_test/boom")
    async def boom() -> dict[str, str]:
        """Fails the way a bug would."""
        raise RuntimeError("secret internals: mongodb://user:pass@host")

    @router.get("/v1/_test/slow")
    async def slow() -> dict[str, str]:
        """Takes longer than the deadline."""
        await asyncio.sleep(5)
        return {"status": "late"}

    return router


def limited_app(settings: Settings, **overrides: Any) -> FastAPI:
    app = make_app(security_settings(settings, **overrides))
    app.include_router(broken_router())
    return app


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(limited_app(settings, rate_limit_per_minute=5)) as client:
        yield client


# --- rate limits ---------------------------------------------------------------------------


async def test_rate_limit_per_credential(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    _, key_a = await credentials.create_api_key(db, "a", Role.viewer)
    _, key_b = await credentials.create_api_key(db, "b", Role.viewer)
    for _ in range(5):
        assert (await api.get("/v1/auth/me", headers=api_key(key_a))).status_code == 200
    refused = await api.get("/v1/auth/me", headers=api_key(key_a))
    body = assert_problem(refused, 429)
    assert "credential" in body["detail"]
    # 5 per minute refills one request every 12 s.
    assert 1 <= int(refused.headers["retry-after"]) <= 12
    # Another credential has its own budget.
    assert (await api.get("/v1/auth/me", headers=api_key(key_b))).status_code == 200
    # The admin key is limited like any credential.
    for _ in range(5):
        assert (await api.get("/v1/auth/me", headers=api_key(ADMIN_KEY))).status_code == 200
    assert_problem(await api.get("/v1/auth/me", headers=api_key(ADMIN_KEY)), 429)


async def test_anonymous_requests_are_limited_per_client_address(api: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await api.get("/openapi.json")).status_code == 200
    refused = await api.get("/nowhere")
    body = assert_problem(refused, 429)
    assert "client address" in body["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    # The token endpoint is anonymous too: password guessing is throttled.
    assert_problem(await api.post("/v1/auth/token", data={"username": "a", "password": "b"}), 429)


async def test_anonymous_request_to_protected_route_is_charged_once(
    api: httpx.AsyncClient,
) -> None:
    for _ in range(5):
        assert (await api.get("/v1/auth/me")).status_code == 401
    assert_problem(await api.get("/v1/auth/me"), 429)


async def test_probes_and_metrics_are_never_limited(api: httpx.AsyncClient) -> None:
    for _ in range(20):
        for path in ("/health", "/ready", "/metrics"):
            # /ready may say 503 (no trained model in the test); never 429.
            assert (await api.get(path)).status_code in (200, 503), path


async def test_bad_credentials_spend_the_address_budget(api: httpx.AsyncClient) -> None:
    """Random tokens cannot buy fresh budgets: failures are charged to the client address."""
    for i in range(5):
        response = await api.get("/v1/auth/me", headers={"Authorization": f"Bearer junk{i}"})
        assert response.status_code == 401
    assert_problem(await api.get("/v1/auth/me", headers=api_key("junk")), 429)
    assert_problem(await api.get("/openapi.json"), 429)


def test_token_bucket_refills_continuously(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limiter = RequestRateLimiter(60)  # one per second, burst 60
    assert all(limiter.hit("k") == 0 for _ in range(60))
    assert limiter.hit("k") == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.hit("k") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.hit("k") == 0
    assert limiter.hit("other") == 0


def test_token_bucket_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limiter = RequestRateLimiter(60, max_keys=100)
    for i in range(100):
        limiter.hit(f"old{i}")
    now[0] += 120  # every old bucket has refilled: forgetting them loses nothing
    for i in range(10):
        limiter.hit(f"new{i}")
    assert len(limiter._buckets) <= 100


def test_full_limiter_evicts_the_least_recently_used_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limiter = RequestRateLimiter(2, max_keys=3)
    assert limiter.hit("victim") == 0 and limiter.hit("victim") == 0
    assert limiter.hit("victim") > 0
    limiter.hit("a")
    limiter.hit("b")
    assert limiter.hit("victim") > 0  # used again: now the most recent
    limiter.hit("c")  # one key too many: "a", the least recently used, goes
    assert list(limiter._buckets) == ["b", "victim", "c"]
    assert limiter.hit("victim") > 0  # still throttled, not reset


def test_a_flood_of_addresses_does_not_reset_a_throttled_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many more distinct keys than the limiter holds, while a throttled client keeps
    trying: it stays throttled (the old limiter cleared every bucket past max_keys)."""
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    limiter = RequestRateLimiter(5, max_keys=100)
    for _ in range(5):
        limiter.hit("ip:victim")
    for i in range(1000):
        limiter.hit(f"ip:flood{i}")
        if i % 50 == 0:
            assert limiter.hit("ip:victim") > 0, i
    assert len(limiter._buckets) == 100


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("testclient", "testclient"),
    ],
)
def test_rate_limits_count_ipv4_per_address_and_ipv6_per_64(host: str, counted_as: str) -> None:
    assert client_ip({"type": "http", "client": (host, 50000)}) == counted_as


async def test_ipv6_addresses_of_one_64_share_a_budget(settings: Settings) -> None:
    async with running(limited_app(settings, rate_limit_per_minute=3)) as app:
        hosts = ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:8000::3"]
        for host in hosts:
            async with client_at(app, host) as api:
                assert (await api.get("/openapi.json")).status_code == 200
        async with client_at(app, "2001:db8:0:1::4") as api:
            assert_problem(await api.get("/openapi.json"), 429)
        async with client_at(app, "2001:db8:0:2::1") as api:  # another /64
            assert (await api.get("/openapi.json")).status_code == 200
        for host in ("192.0.2.1", "192.0.2.2"):  # IPv4: per address
            async with client_at(app, host) as api:
                assert (await api.get("/openapi.json")).status_code == 200


# --- body size -----------------------------------------------------------------------------


@pytest.fixture
async def small_body_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(limited_app(settings, max_body_bytes=1024)) as client:
        yield client


async def test_body_too_large_by_content_length(small_body_api: httpx.AsyncClient) -> None:
    response = await small_body_api.post(
        "/v1/auth/token", data={"username": "u", "password": "p" * 2000}
    )
    assert "1024 bytes" in assert_problem(response, 413)["detail"]


async def test_body_too_large_when_streamed_without_length(
    small_body_api: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"username=u&password=" + b"p" * 300

    response = await small_body_api.post(
        "/v1/auth/token",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


async def test_body_within_limit_is_served(small_body_api: httpx.AsyncClient) -> None:
    response = await small_body_api.post(
        "/v1/auth/token", data={"username": "nobody", "password": "p" * 100}
    )
    assert response.status_code == 401  # reached the endpoint


# --- one error shape -----------------------------------------------------------------------


async def test_unknown_route_is_problem_json(api: httpx.AsyncClient) -> None:
    assert (
        assert_problem(await api.get("/v1/no-such-thing"), 404)["instance"] == "/v1/no-such-thing"
    )


async def test_wrong_method_is_problem_json(api: httpx.AsyncClient) -> None:
    response = await api.delete("/health")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


async def test_validation_error_is_problem_json(api: httpx.AsyncClient) -> None:
    body = assert_problem(await api.post("/v1/auth/token", data={"password": "x"}), 422)
    assert body["errors"] and body["errors"][0]["loc"][-1] == "username"


async def test_unexpected_exception_is_500_problem_json_and_logged(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="app"):
        response = await api.get("/v1/_test/boom", headers={"X-Request-ID": "boom-1"})
    body = assert_problem(response, 500)
    assert body["request_id"] == "boom-1"
    assert "secret internals" not in response.text and "RuntimeError" not in response.text
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "secret internals" in caplog.text  # operators get the traceback, in the log


async def test_deadline_answers_503(settings: Settings) -> None:
    async with serve(limited_app(settings, request_timeout_seconds=0.3)) as api:
        started = time.perf_counter()
        response = await api.get("/v1/_test/slow")
        elapsed = time.perf_counter() - started
    body = assert_problem(response, 503)
    assert "0.3 s" in body["detail"] and response.headers["retry-after"] == "5"
    assert elapsed < 2


# --- request ids, logs, metrics ------------------------------------------------------------


async def test_request_id_is_echoed_or_generated(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health", headers={"X-Request-ID": "abc-123"})).headers[
        "x-request-id"
    ] == "abc-123"
    generated = (await api.get("/health")).headers["x-request-id"]
    assert len(generated) == 32
    # Ids that could forge log lines are replaced, not echoed.
    hostile = await api.get("/health", headers={"X-Request-ID": 'x" "level":"fake'})
    assert hostile.headers["x-request-id"] != 'x" "level":"fake'


async def test_one_json_access_line_per_request(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        await api.get("/v1/auth/me", headers={**api_key(ADMIN_KEY), "X-Request-ID": "log-1"})
    records = [r for r in caplog.records if r.name == "app.access"]
    assert len(records) == 1
    entry = json.loads(JsonFormatter().format(records[0]))
    assert entry["msg"] == "request" and entry["level"] == "info"
    assert entry["method"] == "GET" and entry["route"] == "/v1/auth/me"
    assert entry["status"] == 200 and entry["principal"] == "admin_key:admin-key"
    assert isinstance(entry["duration_ms"], float)
    assert entry["request_id"] == "log-1"


async def test_metrics_count_requests_by_route_template(api: httpx.AsyncClient) -> None:
    from app.observability import DB_ERRORS, PREDICTIONS, SNAPSHOT_REBUILDS

    PREDICTIONS.labels("revenue", "test-v1").inc(3)
    SNAPSHOT_REBUILDS.inc()
    DB_ERRORS.labels("TestError").inc()
    await api.get("/health")
    await api.get("/v1/auth/me")
    await api.get("/v1/does-not-exist/42")
    text = (await api.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/v1/auth/me",status="401"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/v1/does-not-exist/42" not in text  # raw paths never become labels
    assert 'http_request_duration_seconds_count{method="GET",route="/health"}' in text
    assert 'predictions_total{model="revenue",version="test-v1"} 3.0' in text
    assert "analytics_snapshot_rebuilds_total" in text
    assert 'database_errors_total{kind="TestError"}' in text
    assert 'auth_failures_total{reason="missing"}' in text
