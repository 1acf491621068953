"""The persisted snapshot: written whole or not at all, loaded at start when it belongs to the
catalogue and its history, rebuilt (never trusted) when it is damaged or does not match,
caught up from the change log when it is behind, and safe with several processes writing
and reading the same file."""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.main import create_app
from app.services import change_log, meta_repo
from app.services.analytics import (
    AnalyticsEngine,
    Lineage,
    Snapshot,
    SnapshotBuilder,
    SnapshotStore,
    load_snapshot,
)
from app.services.analytics import persist as persist_module
from app.services.analytics.persist import SnapshotFileError, read_snapshot
from app.services.analytics.snapshot import SNAPSHOT_PROJECTION
from app.services.movies_repo import find_movies
from app.services.movies_store import delete_movies, upsert_movies
from app.services.normalize import to_mongo
from tests.analytics_support import app_settings
from tests.snapshot_support import answers, assert_same_snapshot, caught_up, random_film
from tests.support import in_process

CATALOGUE = "c0ffee"


def built(docs: list[dict[str, Any]], version: int = 1, catalogue: str = CATALOGUE) -> Snapshot:
    builder = SnapshotBuilder()
    builder.add(docs)
    return builder.finish(version, 1, time.perf_counter(), Lineage(catalogue, 2, 3, False, "full"))


def odd_docs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Films as stored, with the strings a file format trips over: accents, an emoji, a NUL,
    empty titles, no release date."""
    rng = random.Random(seed)
    docs = [to_mongo(random_film(rng, i)) for i in range(1, n + 1)]
    docs[0]["title"] = "Amélie 🎬"
    docs[1]["title_normalized"] = "nul\x00inside"
    docs[2]["release_date"] = None
    docs[3]["title"] = ""
    return docs


def test_round_trip_is_exact(tmp_path: Path) -> None:
    snap = built(odd_docs(60))
    store = SnapshotStore(tmp_path, "db")
    assert store.save(snap)
    loaded = store.load(CATALOGUE, build_id=9)
    assert loaded is not None
    assert_same_snapshot(loaded, snap)
    assert answers(loaded) == answers(snap)
    assert loaded.lineage == dataclasses.replace(snap.lineage, source="persisted")
    assert loaded.titles[0] == "Amélie 🎬" and loaded.release_dates[2] is None
    # Numbers are mapped from the file, not copied.
    assert not loaded.num["budget"].flags.writeable
    # Not written again while the file is as new; written when newer.
    assert not store.save(snap)
    assert store.save(dataclasses.replace(snap, version=2))
    assert store.load(CATALOGUE, 1) is not None
    assert store.load("another", 1) is None


def _flip(offset_from_end: int) -> Any:
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) - offset_from_end] ^= 0xFF
        path.write_bytes(bytes(data))

    return damage


DAMAGES = {
    "byte flipped in the last array": _flip(1),
    "byte flipped in the header": lambda p: p.write_bytes(
        p.read_bytes()[:40] + b"X" + p.read_bytes()[41:]
    ),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "not a snapshot": lambda p: p.write_bytes(b"hello world, not a snapshot at all"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_is_not_used(tmp_path: Path, damage: str) -> None:
    snap = built(odd_docs(40))
    store = SnapshotStore(tmp_path, "db")
    store.save(snap)
    DAMAGES[damage](store.path(CATALOGUE))
    assert store.load(CATALOGUE, 1) is None
    with pytest.raises(SnapshotFileError):
        read_snapshot(store.path(CATALOGUE), CATALOGUE, 1)


def test_every_byte_is_checked(tmp_path: Path) -> None:
    """A flipped byte anywhere in the file is caught, whichever part holds it."""
    store = SnapshotStore(tmp_path, "db")
    store.save(built(odd_docs(30)))
    path = store.path(CATALOGUE)
    original = path.read_bytes()
    rng = random.Random(1)
    for _ in range(25):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 0x01 << rng.randrange(8)
        path.write_bytes(bytes(data))
        with pytest.raises(SnapshotFileError):
            read_snapshot(path, CATALOGUE, 1)


def test_another_format_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path, "db")
    monkeypatch.setattr(persist_module, "FORMAT_VERSION", 0)
    store.save(built(odd_docs(10)))
    monkeypatch.undo()
    assert store.load(CATALOGUE, 1) is None


# --- with the database: restarts ------------------------------------------------------------


async def started(db: AsyncDatabase[Document], store: SnapshotStore) -> AnalyticsEngine:
    engine = AnalyticsEngine(db, check_seconds=0, store=store, persist_seconds=0)
    engine.start()
    await caught_up(engine, db)
    return engine


async def persisted_engine(db: AsyncDatabase[Document], store: SnapshotStore) -> Snapshot:
    """Start an engine (a full read), let it persist its snapshot, stop it."""
    engine = await started(db, store)
    try:
        await engine.persisted()
        snap = engine.current
        assert snap is not None and snap.lineage.source == "full"
        return snap
    finally:
        await engine.close()


async def first_source(db: AsyncDatabase[Document], store: SnapshotStore) -> str:
    """How a new engine got its first snapshot, checked against a full read."""
    engine = await started(db, store)
    try:
        snap = engine.current
        assert snap is not None
        assert_same_snapshot(snap, await load_snapshot(db))
        return snap.lineage.source
    finally:
        await engine.close()


async def test_restart_loads_the_persisted_snapshot_and_catches_up(
    db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    rng = random.Random(11)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 31)])
    store = SnapshotStore(tmp_path, db.name)
    await persisted_engine(db, store)
    assert await first_source(db, store) == "persisted"  # nothing changed meanwhile
    # Writes while no service runs: the next start catches up from the change log.
    await upsert_movies(db, [random_film(rng, i) for i in (3, 7, 31, 32)])
    await delete_movies(db, [5])
    assert await first_source(db, store) == "incremental"


async def test_mismatches_are_rebuilt(db: AsyncDatabase[Document], tmp_path: Path) -> None:
    rng = random.Random(12)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 21)])
    store = SnapshotStore(tmp_path, db.name)
    snap = await persisted_engine(db, store)
    path = store.path(snap.lineage.catalogue)
    good = path.read_bytes()

    # Damaged on disk.
    _flip(100)(path)
    assert await first_source(db, store) == "full"

    # Newer than the database (e.g. the database restored from an older backup).
    persist_module.write_snapshot(dataclasses.replace(snap, version=snap.version + 5), path)
    assert await first_source(db, store) == "full"

    # Same version, another hash epoch: another history.
    lineage = dataclasses.replace(snap.lineage, hash_epoch=snap.lineage.hash_epoch + 1)
    persist_module.write_snapshot(dataclasses.replace(snap, lineage=lineage), path)
    assert await first_source(db, store) == "full"

    # Behind, and the change log was pruned past its mark.
    path.write_bytes(good)
    await upsert_movies(db, [random_film(rng, 40)])
    await change_log.prune(db, keep_seconds=0.0)
    assert await first_source(db, store) == "full"


async def test_another_catalogue_is_not_used(db: AsyncDatabase[Document], tmp_path: Path) -> None:
    """The database dropped and filled again: same name, same version, another catalogue."""
    rng = random.Random(13)
    films = [random_film(rng, i) for i in range(1, 11)]
    await upsert_movies(db, films)
    store = SnapshotStore(tmp_path, db.name)
    old = await persisted_engine(db, store)
    await db.client.drop_database(db.name)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 11)])
    state = await meta_repo.catalogue_state(db)
    assert state.catalogue != old.lineage.catalogue and state.version == old.version
    assert await first_source(db, store) == "full"
    assert sorted(tmp_path.glob(f"{db.name}.*.snapshot")) == [store.path(state.catalogue)]  # noqa: ASYNC240


async def test_the_app_answers_from_the_persisted_snapshot(
    db: AsyncDatabase[Document], mongodb_uri: str, tmp_path: Path
) -> None:
    rng = random.Random(14)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 26)])
    settings = app_settings(mongodb_uri, db.name, tmp_path)
    bodies, sources = [], []
    for _ in range(2):
        app = create_app(settings)
        async with in_process(app, headers={"X-API-Key": settings.admin_api_key or ""}) as http:
            response = await http.get("/v1/analytics/genres")
            assert response.status_code == 200
            bodies.append(response.json())
            engine = app.state.app_state.analytics
            await engine.persisted()
            assert engine.current is not None
            sources.append(engine.current.lineage.source)
    assert list((tmp_path / "localdb" / "snapshots").glob("*.snapshot"))
    assert sources == ["full", "persisted"] and bodies[0] == bodies[1]


# --- several processes ----------------------------------------------------------------------


def _versioned(version: int) -> Snapshot:
    """A snapshot whose content tells its version: version + 20 films titled after it."""
    docs = [
        {"id": i, "title": f"v{version} film {i}", "title_normalized": f"v{version} film {i}"}
        for i in range(1, version + 21)
    ]
    return built(docs, version=version)


def _writer(directory: str, first: int, seconds: float) -> int:
    """Save versions first, first + 2, ... for `seconds`; returns how many were written."""
    store = SnapshotStore(Path(directory), "db")
    written, version = 0, first
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        written += store.save(_versioned(version))
        version += 2
    return written


def _reader(directory: str, seconds: float) -> tuple[int, list[int]]:
    """Load the file again and again; every load must be whole (no torn read)."""
    path = SnapshotStore(Path(directory), "db").path(CATALOGUE)
    seen: list[int] = []
    loads = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            snap = read_snapshot(path, CATALOGUE, 1)
        except FileNotFoundError:
            continue
        loads += 1
        assert snap.size == snap.version + 20
        assert snap.titles[-1] == f"v{snap.version} film {snap.size}"
        assert np.array_equal(snap.ids, np.arange(1, snap.size + 1))
        seen.append(snap.version)
    return loads, seen


def test_several_processes_write_and_read_safely(tmp_path: Path) -> None:
    """Two processes persisting ever newer snapshots, two reading all the while: readers
    only ever see whole files, the file only moves forward, and the lock keeps writers from
    writing at once (each save either writes or steps aside)."""
    SnapshotStore(tmp_path, "db").save(_versioned(1))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        readers = [pool.submit(_reader, str(tmp_path), 10.0) for _ in range(2)]
        writers = [pool.submit(_writer, str(tmp_path), first, 8.0) for first in (2, 3)]
        written = sum(w.result() for w in writers)
        results = [r.result() for r in readers]
    seen_all = [v for _, seen in results for v in seen]
    assert written > 1 and len(set(seen_all)) > 1  # the readers saw the file change
    for loads, seen in results:
        assert loads > 0
        assert seen == sorted(seen)  # never an older file after a newer one
    final = read_snapshot(SnapshotStore(tmp_path, "db").path(CATALOGUE), CATALOGUE, 1)
    assert final.version >= max(seen_all)
    assert not list(tmp_path.glob(".*.tmp-*"))


async def test_reads_films_by_id(db: AsyncDatabase[Document]) -> None:
    rng = random.Random(15)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 6)])
    docs = await find_movies(db, [2, 4, 99], SNAPSHOT_PROJECTION)
    assert sorted(d["id"] for d in docs) == [2, 4]


async def test_shutdown_saves_a_snapshot_newer_than_the_file(
    db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    """A refresh waiting out `persist_seconds` is saved when the service stops, so that the
    next start loads it instead of catching up from the change log (seconds at 1M films)."""
    rng = random.Random(12)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 21)])
    store = SnapshotStore(tmp_path, db.name)
    await persisted_engine(db, store)
    engine = AnalyticsEngine(db, check_seconds=0, store=store, persist_seconds=3600)
    engine.start()
    try:
        await caught_up(engine, db)
        await upsert_movies(db, [random_film(rng, i) for i in (2, 21)])
        await caught_up(engine, db)
        await engine.persisted()  # the first refresh after a start is saved at once
        await upsert_movies(db, [random_film(rng, i) for i in (4, 22)])
        await caught_up(engine, db)  # this one waits out the hour...
        latest = engine.current
        assert latest is not None and latest.lineage.source == "incremental"
    finally:
        await engine.close()  # ...and is saved now
    assert await first_source(db, store) == "persisted"
    catalogue = (await meta_repo.catalogue_state(db)).catalogue
    reloaded = store.load(catalogue, 99)
    assert reloaded is not None and reloaded.version == latest.version
