"""Password guessing: failed logins limited per client address and per username whatever
credential headers come with them, and Argon2 kept off the threads the rest of the service
needs, so a login flood neither guesses at full speed nor stalls analytics."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.authn import HASH_THREAD_NICENESS, LoginGuard
from app.db import Document
from app.security import Role
from app.services import credentials
from app.settings import Settings
from tests.security_support import ADMIN_KEY, client_at, make_app, running, security_settings

PASSWORD = "correct horse battery staple"
PROBLEM = "application/problem+json"
# Headers a guesser might add hoping to be taken for an authenticated client.
BOGUS_HEADERS: list[dict[str, str]] = [
    {"Authorization": "Bearer not-a-token"},
    {"X-API-Key": "tak_000000000000_" + "A" * 43},
    {"Authorization": "Basic YTpi", "X-API-Key": "junk"},
]


def login_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "rate_limit_per_minute": 10_000,  # only the login limits under test apply
        "login_ip_failures_per_minute": 10_000,
        "login_user_failures_per_minute": 10_000,
        **overrides,
    }
    return security_settings(settings, **values)


async def try_login(
    api: httpx.AsyncClient, username: str, password: str, i: int = 0
) -> httpx.Response:
    return await api.post(
        "/v1/auth/token",
        data={"username": username, "password": password},
        headers=BOGUS_HEADERS[i % len(BOGUS_HEADERS)],
    )


def assert_429(response: httpx.Response, max_retry_after: int) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert 1 <= int(response.headers["retry-after"]) <= max_retry_after
    body: dict[str, Any] = response.json()
    assert body["status"] == 429
    return body


@pytest.fixture
async def alice(db: AsyncDatabase[Document]) -> str:
    await credentials.create_user(db, "alice", Role.viewer, PASSWORD)
    return "alice"


async def test_login_endpoint_spends_the_address_budget_whatever_the_headers(
    settings: Settings,
) -> None:
    """A credential header used to exempt a request from the per-address limit; the login
    endpoint takes none, so it is charged anyway."""
    app = make_app(login_settings(settings, rate_limit_per_minute=3))
    async with running(app) as served, client_at(served, "198.51.100.1") as api:
        for i in range(3):
            assert (await try_login(api, f"guess{i}", "nope", i)).status_code == 401
        body = assert_429(await try_login(api, "guess9", "nope", 1), 20)
        assert "client address" in body["detail"]


async def test_failed_logins_are_limited_per_address(settings: Settings, alice: str) -> None:
    app = make_app(login_settings(settings, login_ip_failures_per_minute=3))
    async with running(app) as served:
        async with client_at(served, "198.51.100.7") as guesser:
            for i in range(3):  # a different username each time: only the address counts
                assert (await try_login(guesser, f"user{i}", "nope", i)).status_code == 401
            for i in range(3):
                body = assert_429(await try_login(guesser, f"other{i}", "nope", i), 20)
                assert "client address" in body["detail"]
            # No password is checked from that address any more, not even a correct one.
            assert_429(await try_login(guesser, alice, PASSWORD), 20)
        async with client_at(served, "198.51.100.8") as neighbour:
            assert (await try_login(neighbour, alice, PASSWORD)).status_code == 200


async def test_failed_logins_are_limited_per_username(settings: Settings, alice: str) -> None:
    app = make_app(login_settings(settings, login_user_failures_per_minute=3))
    async with running(app) as served:
        for i in range(3):  # a different address each time: only the username counts
            async with client_at(served, f"203.0.113.{i + 1}") as api:
                assert (await try_login(api, alice, "wrong", i)).status_code == 401
        async with client_at(served, "203.0.113.50") as api:
            body = assert_429(await try_login(api, alice, "wrong"), 20)
            assert "username" in body["detail"]
            # Case variants are the same username for the limit.
            assert_429(await try_login(api, "ALICE", "wrong", 1), 20)
            # Other accounts are unaffected.
            assert (await try_login(api, "bob", "wrong", 2)).status_code == 401


async def test_successful_logins_do_not_count(settings: Settings, alice: str) -> None:
    app = make_app(
        login_settings(settings, login_ip_failures_per_minute=2, login_user_failures_per_minute=2)
    )
    async with running(app) as served, client_at(served, "192.0.2.10") as api:
        for i in range(4):
            assert (await try_login(api, alice, PASSWORD, i)).status_code == 200
        assert (await try_login(api, alice, "wrong")).status_code == 401
        assert (await try_login(api, alice, "wrong")).status_code == 401
        assert_429(await try_login(api, alice, "wrong"), 30)


async def test_a_login_flood_beyond_the_hash_queue_is_shed(settings: Settings) -> None:
    app = make_app(login_settings(settings, login_hash_threads=1, login_hash_queue=1))
    async with running(app) as served, client_at(served, "192.0.2.20") as api:
        responses = await asyncio.gather(
            *(try_login(api, f"flood{i}", "nope", i) for i in range(8))
        )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {401, 503}, statuses
    assert statuses.count(401) >= 2  # the one hashing and the one waiting
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["content-type"].startswith(PROBLEM)
    assert shed.headers["retry-after"] == "1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_hash_threads_yield_the_cpu_to_serving_threads(settings: Settings) -> None:
    """On a machine whose cores the hash threads fill, the scheduler still runs the threads
    that answer analytics first: the hash threads are niced, the rest of the process is not."""
    guard = LoginGuard(settings)
    try:
        niceness = guard.executor.submit(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        ).result()
    finally:
        guard.close()
    process_niceness = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness == min(19, process_niceness + HASH_THREAD_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process_niceness


async def test_analytics_and_health_answer_promptly_during_a_login_flood(
    settings: Settings,
) -> None:
    """Argon2 used to run in the default executor, where analytics computations (and model
    loading) run too: a login flood queued them behind every hash. Timed relative to the
    flood itself, so a slow machine slows both sides alike."""
    flood_size = 16
    app = make_app(login_settings(settings, login_hash_queue=flood_size))
    headers = {"X-API-Key": ADMIN_KEY}
    async with running(app) as served, client_at(served, "192.0.2.30") as api:
        warm = await api.get("/v1/analytics/summary", headers=headers)
        assert warm.status_code == 200, warm.text  # the first snapshot is built
        started = time.perf_counter()
        flood = [
            asyncio.create_task(try_login(api, f"flood{i}", "nope", i)) for i in range(flood_size)
        ]
        await asyncio.sleep(0.05)  # every login has reached its hash
        asked = time.perf_counter()
        # A query not asked before, so it is computed in a worker thread, not cached.
        analytics = await api.get("/v1/analytics/summary?year_from=1990", headers=headers)
        analytics_seconds = time.perf_counter() - asked
        asked = time.perf_counter()
        health = await api.get("/health")
        health_seconds = time.perf_counter() - asked
        statuses = [r.status_code for r in await asyncio.gather(*flood)]
        flood_seconds = time.perf_counter() - started
    assert analytics.status_code == 200 and health.status_code == 200
    assert statuses == [401] * flood_size
    timings = f"analytics {analytics_seconds:.3f} s, health {health_seconds:.3f} s, "
    timings += f"flood {flood_seconds:.3f} s"
    assert analytics_seconds < flood_seconds / 4, timings
    assert health_seconds < flood_seconds / 4, timings
