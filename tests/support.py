"""Helpers every test module may use: where the real data is, the app behind an in-process
client (lifespan run), and the one check of an error answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TMDB_TRAIN_CSV = SHARED_DATA / "tmdb_5000_movies.train.csv"
IMDB_CSV = SHARED_DATA / "imdb_5000_movie_metadata.csv"
PROBLEM = "application/problem+json"
REPO_ROOT = Path(__file__).resolve().parent.parent
# A loaded 2-core machine may take a while to open the database, prepare it and load models.
STARTUP_TIMEOUT_SECONDS = 60


@asynccontextmanager
async def in_process(
    app: FastAPI,
    *,
    headers: Mapping[str, str] | None = None,
    base_url: str = "http://testserver",
    timeout: float = 120,  # noqa: ASYNC109 (the client's own timeout, not the function's)
) -> AsyncIterator[httpx.AsyncClient]:
    """`app` with its lifespan run, behind an httpx client that calls it in process."""
    async with (
        LifespanManager(
            app, startup_timeout=STARTUP_TIMEOUT_SECONDS, shutdown_timeout=STARTUP_TIMEOUT_SECONDS
        ) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app),
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=timeout,
        ) as client,
    ):
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 answer with this status, a title, the request id, and no traceback."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


def require_shared(path: Path) -> Path:
    """`path` under ../shared/data, or skip the test saying where the real data belongs."""
    if not path.exists():
        pytest.skip(f"real data not found at {path} (place ../shared/data beside the repo)")
    return path


def source_modules(packages: tuple[str, ...] = ("app", "training")) -> dict[str, Path]:
    """Every module of the packages, by dotted name, and its file (a package is its
    `__init__`): for tests that read the source (import graph, collection owners)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found
