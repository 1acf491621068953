"""Property-based API testing: schemathesis generates requests from the app's own OpenAPI
document (valid and invalid ones) and calls every operation in-process over ASGI.

The bar is zero server errors (no 5xx on any input) plus responses that match what the
document promises. Authenticated with the admin key so every operation is reachable; a slice
of the real TMDB data is loaded when available so the analytics and movie endpoints work on
real rows rather than an empty catalogue.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from pymongo import AsyncMongoClient
from schemathesis.python import asgi as schemathesis_asgi
from starlette.types import Receive, Scope, Send

from app.db import Document
from app.main import create_app
from app.services.csv_io import import_tmdb_csv
from app.services.indexes import ensure_indexes
from app.settings import Settings
from tests.ml_support import copy_artifacts
from tests.security_support import ADMIN_KEY, JWT_SECRET
from tests.support import IMDB_CSV, TMDB_TRAIN_CSV

SEED_ROWS = 400
# Bounded so the module takes about a minute of CPU: random examples per operation, plus
# schemathesis's deterministic "coverage" phase (boundary values: empty strings, minimum
# lengths, extremes), which finds the most and costs about half the time. Deeper run:
# `SCHEMATHESIS_MAX_EXAMPLES=200 pytest tests/test_schemathesis.py`; quicker one:
# `SCHEMATHESIS_COVERAGE=0`.
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))
COVERAGE_PHASE = os.environ.get("SCHEMATHESIS_COVERAGE", "1") != "0"


def _csv_slice(source: Path, target: Path, rows: int) -> Path:
    # Through the csv module: cells hold JSON lists and may span lines.
    with source.open(newline="", encoding="utf-8") as src, target.open("w", newline="") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst)
        for i, row in enumerate(reader):
            if i > rows:
                break
            writer.writerow(row)
    return target


@pytest.fixture(scope="module")
async def fuzz_db_name(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        db = client[name]
        await ensure_indexes(db)
        if TMDB_TRAIN_CSV.exists():
            tmp = tmp_path_factory.mktemp("fuzz")
            await import_tmdb_csv(db, _csv_slice(TMDB_TRAIN_CSV, tmp / "slice.csv", SEED_ROWS))
        yield name
    finally:
        await client.drop_database(name)
        await client.close()


class DeferredApp:
    """An ASGI app that forwards to one chosen later. Schemathesis binds its app when the tests
    are collected, but the real app needs the database fixture, which exists only at run time.
    """

    def __init__(self) -> None:
        self.target: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "the fuzz_app fixture sets the target"
        await self.target(scope, receive, send)


DEFERRED = DeferredApp()


@pytest.fixture(scope="module")
def fuzz_app(
    fuzz_db_name: str, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FastAPI]:
    tmp = tmp_path_factory.mktemp("fuzz-app")
    # Real (quick-trained, session-cached) models, so the prediction endpoints are fuzzed
    # behind a model and /ready can be ready; without the shared data there are none.
    artifacts = tmp / "artifacts"
    if TMDB_TRAIN_CSV.exists() and IMDB_CSV.exists():
        artifacts = copy_artifacts(tmp_path_factory)
    settings = Settings(
        app_env="test",
        mongodb_uri=mongodb_uri,
        mongodb_db=fuzz_db_name,
        jwt_secret=JWT_SECRET,
        admin_api_key=ADMIN_KEY,
        # Thousands of requests in seconds from one credential: limits are tested elsewhere.
        rate_limit_per_minute=10_000_000,
        artifacts_dir=artifacts,
        data_dir=tmp / "data",
        local_db_dir=tmp / "localdb",
    )
    DEFERRED.target = create_app(settings)
    yield DEFERRED.target
    # Schemathesis runs the app's lifespan in its own event loop thread; end it here so the
    # database client and background tasks stop with this module, not at interpreter exit.
    schemathesis_asgi.shutdown_lifespans()
    DEFERRED.target = None


# The document under test is the real factory's, read without starting that app (no database
# at collection time); requests go through DEFERRED to the fixture's app, which has one.
# (Eager rather than `schemathesis.pytest.from_fixture`, whose lazy loading breaks on pytest 9.)
REQUEST_TIMEOUT_SECONDS = 120
schema = schemathesis.openapi.from_dict(
    create_app(Settings(app_env="test", mongodb_uri="mongodb://127.0.0.1:9/")).openapi()
)
schema.app = DEFERRED
schema.config.phases.coverage.enabled = COVERAGE_PHASE


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
)
def test_api_conforms_and_never_fails(case: schemathesis.Case[Any], fuzz_app: FastAPI) -> None:
    """Every generated request: no 5xx, and the response matches the OpenAPI document."""
    case.call_and_validate(
        headers={"X-API-Key": ADMIN_KEY},
        # The first EDA report of a data version is built on request (charts included): on
        # a loaded 2-core machine that took over schemathesis's default 10 s.
        timeout=REQUEST_TIMEOUT_SECONDS,
        excluded_checks=[
            # Schema-valid is not always meaningful: `year_from` after `year_to`, or a cursor
            # the service never issued, pass the schema and are rightly refused with a 400.
            schemathesis.checks.positive_data_acceptance,
            # FastAPI validates in pydantic's lax mode on purpose: "3" is accepted for an
            # integer, and a query parameter is text on the wire whatever the generator meant.
            schemathesis.checks.negative_data_rejection,
        ],
        # Every other default check stays on, `not_a_server_error` first among them.
    )
