"""Database outage and recovery against a real FerretDB of this test's own (the shared session
server is left alone): stop it, and requests that need it answer 503 problem+json within
seconds; start it again, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from app.db import Document
from app.localdb import LocalServer, free_port
from app.security import Role
from app.services import credentials
from app.settings import Settings
from tests.security_support import ADMIN_KEY, JWT_SECRET, api_key, bearer, make_app, serve

OUTAGE_LIMIT_S = 6.0
RECOVERY_LIMIT_S = 30.0
PASSWORD = "correct horse battery staple"


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


async def test_outage_gives_503_fast_and_recovery_is_automatic(tmp_path: Path) -> None:
    server = LocalServer(directory=tmp_path / "ferretdb", port=free_port())
    await asyncio.to_thread(server.start)
    try:
        settings = Settings(
            app_env="test",
            mongodb_uri=server.uri,
            mongodb_db="outage",
            # The shipped default (3 s server selection), not a test-friendly value.
            mongodb_timeout_ms=Settings().mongodb_timeout_ms,
            jwt_secret=JWT_SECRET,
            admin_api_key=ADMIN_KEY,
            # Short, so the test sees both a recently verified key (answered from its expired
            # cache entry during the outage) and a key never seen before (503).
            api_key_cache_seconds=0.5,
            rate_limit_per_minute=100_000,
            local_db_dir=tmp_path / "unused",
        )
        seed: AsyncMongoClient[Document] = AsyncMongoClient(server.uri)
        try:
            await credentials.create_user(seed["outage"], "ops", Role.viewer, PASSWORD)
            _, key = await credentials.create_api_key(seed["outage"], "partner", Role.viewer)
            _, fresh_key = await credentials.create_api_key(seed["outage"], "new", Role.viewer)
        finally:
            await seed.close()
        login = {"username": "ops", "password": PASSWORD}

        async with serve(make_app(settings)) as api:
            # Only the database check matters here (/ready also waits for trained models).
            assert (await api.get("/ready")).json()["checks"]["database"] == "ok"
            token_response = await api.post("/v1/auth/token", data=login)
            assert token_response.status_code == 200
            token = token_response.json()["access_token"]
            assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200

            # --- outage ---------------------------------------------------------------------
            await asyncio.to_thread(server.stop)
            assert not server.accepts_connections()
            figures: dict[str, float] = {}

            ready, figures["ready_503_s"] = await timed(api.get("/ready"))
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")

            db_backed: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
                "login_503_s": lambda: api.post("/v1/auth/token", data=login),
                "api_key_503_s": lambda: api.get("/v1/auth/me", headers=api_key(fresh_key)),
            }
            for name, call in db_backed.items():
                response, figures[name] = await timed(call())
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["retry-after"] == "5"
                assert response.json()["request_id"] == response.headers["x-request-id"]

            # A signed token needs no database: logged-in users are still recognised; so is a
            # key verified shortly before the outage (its cache entry has expired by now).
            still = await api.get("/v1/auth/me", headers=bearer(token))
            assert still.status_code == 200
            known = await api.get("/v1/auth/me", headers=api_key(key))
            assert known.status_code == 200
            assert all(seconds < OUTAGE_LIMIT_S for seconds in figures.values()), figures

            metrics = (await api.get("/metrics")).text
            assert "database_errors_total{kind=" in metrics

            # --- recovery -------------------------------------------------------------------
            await asyncio.to_thread(server.start)
            restarted = time.perf_counter()
            recovered_at = None
            while time.perf_counter() - restarted < RECOVERY_LIMIT_S:
                ready = await api.get("/ready")
                me = await api.get("/v1/auth/me", headers=api_key(fresh_key))
                if ready.json()["checks"]["database"] == "ok" and me.status_code == 200:
                    recovered_at = time.perf_counter()
                    break
                await asyncio.sleep(0.25)
            assert recovered_at is not None, "no recovery within 30 s of the restart"
            figures["recovery_s"] = recovered_at - restarted
            assert (await api.post("/v1/auth/token", data=login)).status_code == 200
        print(
            "\noutage figures: "
            + ", ".join(f"{name}={seconds:.2f}" for name, seconds in figures.items())
        )
    finally:
        await asyncio.to_thread(server.stop)
