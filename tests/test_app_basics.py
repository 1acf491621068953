"""Service skeleton: probes, error shape, generated docs, and the local database manager."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.localdb import LocalServer, free_port
from app.main import create_app
from app.openapi_doc import generate
from app.settings import Settings
from tests.support import in_process

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(create_app(settings), base_url="http://test") as http:
        yield http


async def test_health_and_ready(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    ready = await api.get("/ready")
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["analytics"] == "ok"  # an empty catalogue builds at once


async def test_ready_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"mongodb_uri": f"mongodb://127.0.0.1:{free_port()}/", "mongodb_timeout_ms": 300}
    )
    async with in_process(create_app(dead), base_url="http://test") as http:
        assert (await http.get("/health")).status_code == 200
        started = time.monotonic()
        ready = await http.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unavailable")
        assert time.monotonic() - started < 6


async def test_unknown_route_is_problem_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


def test_openapi_md_is_generated_from_the_app() -> None:
    checked_in = (REPO / "openapi.md").read_text()
    assert checked_in == generate(), "openapi.md is stale: run `make openapi`"


def test_production_refuses_placeholder_jwt_secret() -> None:
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(app_env="production", jwt_secret="change-me")
    with pytest.raises(ValueError, match="JWT_SECRET"):
        Settings(app_env="production", jwt_secret="short")
    assert Settings(app_env="production", jwt_secret="x" * 40).app_env == "production"


def test_local_server_start_is_idempotent_and_stop_is_clean(tmp_path: Path) -> None:
    server = LocalServer(directory=tmp_path, port=free_port())
    assert server.start() is True
    try:
        assert server.start() is False  # already running: nothing new
        assert server.is_running() and server.accepts_connections()
        assert server.pidfile.exists()
    finally:
        assert server.stop() is True
    assert not server.is_running() and not server.pidfile.exists()
    assert server.stop() is False


def test_cli_db_lifecycle(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LOCAL_DB_DIR": str(tmp_path / "db"),
        "LOCAL_DB_PORT": str(free_port()),
    }
    env.pop("MONGODB_URI", None)
    cli = [sys.executable, "-m", "app.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert run("db", "status").returncode == 1
    started = run("db", "start")
    assert started.returncode == 0, started.stderr
    try:
        assert "already running" in run("db", "start").stderr
        status = run("db", "status")
        assert status.returncode == 0 and "running pid=" in status.stdout
        assert run("db", "uri").stdout.strip() == f"mongodb://127.0.0.1:{env['LOCAL_DB_PORT']}/"
    finally:
        assert run("db", "stop").returncode == 0
    assert run("db", "status").returncode == 1
    with_uri = run("db", "uri")
    assert with_uri.returncode == 0
    env["MONGODB_URI"] = "mongodb://db.example:27017/"
    assert run("db", "uri").stdout.strip() == "mongodb://db.example:27017/"


async def test_405_allow_names_every_method_of_the_path(api: httpx.AsyncClient) -> None:
    """GET and POST /v1/dashboards are two routes; a 405 there must allow both (RFC 9110)."""
    for method, path, allowed in [
        ("OPTIONS", "/v1/dashboards", "GET, HEAD, POST"),
        ("PATCH", "/v1/dashboards/" + "ab" * 12, "GET, HEAD, PUT, DELETE"),
        ("DELETE", "/v1/analytics/genres", "GET, HEAD"),
        # Fixed paths beside `/{dashboard_id}` name only their own methods.
        ("OPTIONS", "/v1/dashboards/catalog", "GET, HEAD"),
        ("OPTIONS", "/v1/dashboards/default", "POST"),
    ]:
        response = await api.request(method, path)
        assert response.status_code == 405
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["allow"] == allowed
