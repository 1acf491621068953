"""One model version everywhere, in process: registries sharing one database (as workers and
replicas do) follow each other's activations; a version one cannot load is reported, never
raised; a refused or unrecordable activation changes nothing; training records its versions.
The same over real HTTP with two worker processes: tests/test_workers_http.py."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document, make_client
from app.localdb import free_port
from app.ml import artifacts
from app.ml.registry import ArtifactError, ModelRegistry
from app.observability import MODEL_BEHIND, MODEL_FOLLOW_FAILURES
from app.services import model_versions
from app.settings import Settings
from tests.ml_support import copy_artifacts, versions
from training.cli import record_activations

SWITCH_LIMIT_S = 2.0  # every process serves a new activation within this
BROKEN = "29990101T000000Z"


def _break(root: Path, name: str, source: str) -> str:
    """A copy of `source` published as version BROKEN whose model file is garbage."""
    target = root / name / BROKEN
    shutil.copytree(root / name / source, target)
    (target / artifacts.MODEL_FILE).write_bytes(b"not a pickle")
    return BROKEN


@pytest.fixture
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_artifacts(tmp_path_factory)


def _serving(registry: ModelRegistry, name: str) -> str | None:
    model = registry.get(name)
    return model.version if model else None


async def test_registries_sharing_a_database_serve_one_version(
    root: Path, db: AsyncDatabase[Document]
) -> None:
    old, new = versions(root, "revenue")
    first = ModelRegistry(root, db=db)
    await first.load_all()
    # The database held nothing: the first process recorded what ACTIVE names.
    seeded = await model_versions.read(db, "revenue")
    assert seeded is not None and seeded.version == new and seeded.source == "seed"
    second = ModelRegistry(root, db=db, check_seconds=0.1)
    await second.load_all()
    second.start_following()
    try:
        await first.activate("revenue", old, by="key:ops")
        started = time.monotonic()
        while _serving(second, "revenue") != old:
            assert time.monotonic() - started < SWITCH_LIMIT_S
            await asyncio.sleep(0.02)
        record = second.record("revenue")
        assert record is not None and record.activated_by == "key:ops"
        assert record.source == "activate" and record.seq == seeded.seq + 1
        # A process started later loads the database's version, whatever ACTIVE says.
        artifacts.write_active(root, "revenue", new)
        later = ModelRegistry(root, db=db)
        await later.load_all()
        assert _serving(later, "revenue") == old
        # A reload publishes ACTIVE's version to every process.
        await later.reload("revenue", by="jwt:alice")
        await first.follow()
        assert _serving(first, "revenue") == new
        # Each follows the other: no process keeps a version of its own.
        await first.activate("revenue", old)
        await later.follow()
        await second.follow()  # rather than wait for its next background check
        assert {_serving(r, "revenue") for r in (first, second, later)} == {old}
    finally:
        await second.close()


async def test_a_version_that_cannot_load_here_is_reported_and_the_current_one_serves(
    root: Path, db: AsyncDatabase[Document], settings: Settings
) -> None:
    registry = ModelRegistry(root, db=db)
    await registry.load_all()
    serving = registry.get("hit")
    assert serving is not None
    _break(root, "hit", serving.version)
    failures = MODEL_FOLLOW_FAILURES.labels("hit")._value.get()
    await model_versions.record(db, "hit", BROKEN, "key:elsewhere", "activate")
    await registry.follow()  # never raises
    assert registry.get("hit") is serving
    behind = registry.behind("hit") or ""
    assert BROKEN in behind and "cannot load here" in behind and serving.version in behind
    check = await registry.readiness()
    assert check.startswith("not ready") and "hit: serving " in check
    assert MODEL_BEHIND.labels("hit")._value.get() == 1
    assert MODEL_FOLLOW_FAILURES.labels("hit")._value.get() == failures + 1
    # Not retried on every check; a new activation (here of the serving version) clears it.
    await registry.follow()
    assert MODEL_FOLLOW_FAILURES.labels("hit")._value.get() == failures + 1
    await model_versions.record(db, "hit", serving.version, "key:ops", "activate")
    await registry.follow()
    assert registry.behind("hit") is None and await registry.readiness() == "ok"
    assert MODEL_BEHIND.labels("hit")._value.get() == 0
    # A process starting while the database names a version it cannot load serves ACTIVE's
    # and reports the gap.
    await model_versions.record(db, "hit", BROKEN, "key:elsewhere", "activate")
    fresh = ModelRegistry(root, db=db)
    await fresh.load_all()
    assert _serving(fresh, "hit") == serving.version and fresh.behind("hit")


async def test_an_activation_refused_or_not_recorded_changes_nothing(
    root: Path, db: AsyncDatabase[Document]
) -> None:
    old, new = versions(root, "hit")
    registry = ModelRegistry(root, db=db)
    await registry.load_all()
    before = await model_versions.read(db, "hit")
    _break(root, "hit", new)
    with pytest.raises(ArtifactError):
        await registry.activate("hit", BROKEN)
    assert await model_versions.read(db, "hit") == before
    assert artifacts.read_active(root, "hit") == new and _serving(registry, "hit") == new
    # The database out of reach: refused too, rather than one process going its own way.
    dead: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=300
    )
    try:
        cut_off = ModelRegistry(root, db=dead["x"])
        await cut_off.load_all()  # serves ACTIVE's versions meanwhile
        assert _serving(cut_off, "hit") == new
        with pytest.raises(PyMongoError):
            await cut_off.activate("hit", old)
        assert _serving(cut_off, "hit") == new and artifacts.read_active(root, "hit") == new
    finally:
        await dead.close()


async def test_training_records_its_activation_for_running_services(
    root: Path, db: AsyncDatabase[Document], settings: Settings
) -> None:
    old, _ = versions(root, "revenue")
    said: list[str] = []
    ok = await asyncio.to_thread(record_activations, settings, [("revenue", old)], said.append)
    assert ok, said
    record = await model_versions.read(db, "revenue")
    assert record is not None and record.version == old and record.source == "training"
    unreachable = settings.model_copy(
        update={"mongodb_uri": f"mongodb://127.0.0.1:{free_port()}/", "mongodb_timeout_ms": 300}
    )
    assert not await asyncio.to_thread(
        record_activations, unreachable, [("revenue", old)], said.append
    )
    assert "reload" in said[-1]


async def test_close_stops_the_follower_wherever_the_cancel_lands(
    tmp_path: Path, settings: Settings
) -> None:
    """A cancel landing inside a driver call (with the service's socket timeout set) used to
    be swallowed there, so the follow loop ran on and `close`, the app's shutdown, waited
    forever. Checking every millisecond makes the cancel land mid-call; every close must
    still return at once."""
    client = make_client(settings)
    try:
        for _ in range(10):
            registry = ModelRegistry(
                tmp_path / "empty", db=client[settings.mongodb_db], check_seconds=0.001
            )
            registry.start_following()
            await asyncio.sleep(0.02)
            closing = asyncio.ensure_future(registry.close())
            done, _ = await asyncio.wait({closing}, timeout=5)
            assert done, "close() did not return: the follow loop swallowed its cancel"
    finally:
        await client.drop_database(settings.mongodb_db)
        await client.close()
