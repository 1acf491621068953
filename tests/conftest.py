"""Shared fixtures: one real FerretDB server per session, a fresh database per test, and a
test process that ignores the caller's service configuration (environment and `.env`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services import audit
from app.settings import Settings, get_settings
from tests.analytics_support import Catalogue, real_catalogue

# Every variable the service reads (pydantic-settings matches names case-insensitively), plus
# the training module's MLflow store. Test-harness knobs (TEST_MONGODB_URI, FERRETDB_BIN) stay.
SERVICE_ENV = frozenset({name.upper() for name in Settings.model_fields} | {"MLFLOW_TRACKING_URI"})
_isolation = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    """Build every test's settings from a clean environment: an operator's exported
    ADMIN_API_KEY, APP_ENV or MONGODB_URI (or a `.env` in the working directory) must not leak
    into `Settings(...)`. A hook rather than a fixture, so that settings built while test
    modules are collected (e.g. the schemathesis schema) are isolated too."""
    for name in list(os.environ):
        if name.upper() in SERVICE_ENV:
            _isolation.delenv(name)
    _isolation.setitem(Settings.model_config, "env_file", None)
    get_settings.cache_clear()


def pytest_unconfigure(config: pytest.Config) -> None:
    _isolation.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def db_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real FerretDB (SQLite backend) on a free port, or MONGODB_URI's server when set."""
    if os.environ.get("TEST_MONGODB_URI"):
        yield LocalServer(directory=tmp_path_factory.mktemp("unused"), port=0)
        return
    server = LocalServer(directory=tmp_path_factory.mktemp("ferretdb"), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongodb_uri(db_server: LocalServer) -> str:
    return os.environ.get("TEST_MONGODB_URI") or db_server.uri


@pytest.fixture
def db_name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(mongodb_uri: str, db_name: str, tmp_path: Path) -> Settings:
    return Settings(
        app_env="test",
        mongodb_uri=mongodb_uri,
        mongodb_db=db_name,
        artifacts_dir=tmp_path / "artifacts",
        data_dir=tmp_path / "data",
        local_db_dir=tmp_path / "localdb",
    )


@pytest.fixture
async def client(mongodb_uri: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    c: AsyncMongoClient[Document] = AsyncMongoClient(
        mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def db(
    client: AsyncMongoClient[Document], db_name: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    """A fresh database per test, dropped afterwards (after the audit entries the test queued
    are written, so that none lands in a dropped database and makes it again)."""
    database = client[db_name]
    try:
        yield database
    finally:
        await audit.close_all()
        await client.drop_database(db_name)


@pytest.fixture(scope="module")
async def catalogue(mongodb_uri: str) -> AsyncIterator[Catalogue]:
    """The 3,804 real train films with the IMDB enrichment, in a database of their own (one
    per test module that asks; dropped afterwards)."""
    async with real_catalogue(mongodb_uri) as cat:
        yield cat
