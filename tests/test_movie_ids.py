"""Films are stored with `_id` = str(TMDB id) (FerretDB pushes string `_id` equality down to
SQLite); databases written before that, with an integer `_id`, are migrated at startup."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services import movies_rewrite
from app.services.csv_io import import_imdb_csv, import_tmdb_csv
from app.services.indexes import ensure_indexes
from app.services.meta_repo import META, SWAP_MARKER, WRITE_LOCK, get_data_version
from app.services.movies_repo import MOVIES, STAGING, index_staging, movie_key
from app.services.movies_rewrite import (
    REWRITE_THRESHOLD,
    apply_updates,
    migrate_movie_ids,
    prepare_database,
)
from tests.support import IMDB_CSV, TMDB_TRAIN_CSV, require_shared

FILMS = 300


@pytest.fixture
def films_csv(tmp_path: Path) -> Path:
    """The first 300 real train films: enough for every code path, quick to load."""
    with require_shared(TMDB_TRAIN_CSV).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    path = tmp_path / "films.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows[: FILMS + 1])
    return path


async def snapshot(db: AsyncDatabase[Document], collection: str = MOVIES) -> dict[int, Document]:
    return {d["id"]: d async for d in db[collection].find({})}


def without_key(docs: dict[int, Document]) -> dict[int, Document]:
    return {i: {k: v for k, v in d.items() if k != "_id"} for i, d in docs.items()}


async def index_names(db: AsyncDatabase[Document], collection: str = MOVIES) -> set[str]:
    return {i["name"] async for i in await db[collection].list_indexes()}


async def store_old_layout(db: AsyncDatabase[Document], docs: list[Document]) -> None:
    """Films as written before string keys: `_id` = the integer TMDB id."""
    await db.drop_collection(MOVIES)
    await ensure_indexes(db)
    old = [{"_id": d["id"], **{k: v for k, v in d.items() if k != "_id"}} for d in docs]
    await db[MOVIES].insert_many(old)


def assert_string_keys(docs: dict[int, Document]) -> None:
    bad = [(i, d["_id"]) for i, d in docs.items() if d["_id"] != movie_key(i)]
    assert not bad, f"films without a string _id: {bad[:5]}"
    assert all(isinstance(i, int) for i in docs), "the `id` field must stay an integer"


async def test_new_films_get_a_string_id_and_an_integer_id(
    db: AsyncDatabase[Document], films_csv: Path
) -> None:
    report = await import_tmdb_csv(db, films_csv, batch_size=120)
    assert report.summary.inserted == FILMS
    # Films created by an upsert (in place and through the rewrite) get `id` too.
    await apply_updates(db, {900_001: {"title": "in place"}})
    many = {900_100 + n: {"title": f"rewritten {n}"} for n in range(REWRITE_THRESHOLD + 1)}
    await apply_updates(db, many)
    stored = await snapshot(db)
    assert len(stored) == FILMS + 1 + len(many)
    assert_string_keys(stored)
    assert isinstance(stored[19995]["_id"], str) and stored[19995]["title"] == "Avatar"
    assert stored[900_001]["title"] == "in place"
    assert stored[900_100]["title"] == "rewritten 0"
    assert await db[MOVIES].find_one({"_id": 19995}) is None


async def test_old_layout_is_migrated_once_and_keeps_every_field(
    db: AsyncDatabase[Document], films_csv: Path, tmp_path: Path
) -> None:
    await import_tmdb_csv(db, films_csv)
    imdb = await import_imdb_csv(db, require_shared(IMDB_CSV))
    assert imdb.updated > 100
    before = without_key(await snapshot(db))
    await store_old_layout(db, list(before.values()))
    first = await db[MOVIES].find_one({})
    assert first is not None and isinstance(first["_id"], int)
    indexes = await index_names(db)
    version = await get_data_version(db)

    assert await prepare_database(db) == FILMS
    after = await snapshot(db)
    assert len(after) == FILMS
    assert_string_keys(after)
    assert without_key(after) == before, "the migration must keep every field as it was"
    assert await index_names(db) == indexes
    assert {"id_unique", "release_year", "title_normalized"} <= indexes
    assert STAGING not in await db.list_collection_names()
    assert await db[META].find_one({"_id": SWAP_MARKER}) is None
    assert await db[META].find_one({"_id": WRITE_LOCK}) is None
    assert await get_data_version(db) == version, "content did not change"

    assert await prepare_database(db) == 0  # idempotent
    assert await snapshot(db) == after

    # Imports after the migration find the films by their new key: no duplicates.
    again = await import_tmdb_csv(db, films_csv)
    assert again.summary.as_dict() == {
        "inserted": 0,
        "updated": 0,
        "unchanged": FILMS,
        "rejected": 0,
    }
    with films_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    changed = tmp_path / "changed.csv"
    title = rows[0].index("title")
    rows[1][title] = "A Changed Title"
    with changed.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    update = await import_tmdb_csv(db, changed)
    assert (update.summary.inserted, update.summary.updated) == (0, 1)
    final = await snapshot(db)
    assert len(final) == FILMS
    assert_string_keys(final)
    assert await db[MOVIES].count_documents({"title": "A Changed Title"}) == 1


async def test_migration_interrupted_before_or_during_the_swap_is_finished(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [{"id": i, "title": f"t{i}", "genres": ["Drama"]} for i in range(1, 51)]
    await store_old_layout(db, docs)
    expected = {d["id"]: d for d in docs}

    # Killed after the copy, before the marker: `movies` is untouched, the rerun redoes it.
    async def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed")

    monkeypatch.setattr(movies_rewrite, "index_staging", crash)
    with pytest.raises(RuntimeError):
        await migrate_movie_ids(db)
    assert all(isinstance(d["_id"], int) for d in (await snapshot(db)).values())
    monkeypatch.setattr(movies_rewrite, "index_staging", index_staging)

    # Killed inside the swap: marker set, staging whole, `movies` dropped.
    async def crash_swap(db: AsyncDatabase[Document]) -> None:
        await db.drop_collection(MOVIES)
        raise RuntimeError("killed")

    monkeypatch.setattr(movies_rewrite, "_finish_swap", crash_swap)
    with pytest.raises(RuntimeError):
        await migrate_movie_ids(db)
    monkeypatch.undo()
    assert MOVIES not in await db.list_collection_names()
    assert await db[META].find_one({"_id": SWAP_MARKER}) is not None

    assert await prepare_database(db) == 0  # finished, not redone
    after = await snapshot(db)
    assert_string_keys(after)
    assert without_key(after) == expected
    assert "id_unique" in await index_names(db)
    assert STAGING not in await db.list_collection_names()
    assert await db[META].find_one({"_id": SWAP_MARKER}) is None


async def test_concurrent_startups_migrate_once(db: AsyncDatabase[Document]) -> None:
    docs = [{"id": i, "title": f"t{i}"} for i in range(1, 201)]
    await store_old_layout(db, docs)
    # A lock left by a crashed process expires.
    stale = datetime.now(UTC) - timedelta(seconds=1)
    await db[META].insert_one({"_id": WRITE_LOCK, "owner": "crashed", "until": stale})
    results = await asyncio.gather(*(prepare_database(db) for _ in range(3)))
    assert sorted(results) == [0, 0, 200]
    after = await snapshot(db)
    assert len(after) == 200
    assert_string_keys(after)
    assert await db[META].find_one({"_id": WRITE_LOCK}) is None


async def test_empty_database_needs_nothing(db: AsyncDatabase[Document]) -> None:
    assert await prepare_database(db) == 0
    assert "id_unique" in await index_names(db)


async def test_a_prepared_database_starts_without_waiting_for_the_write_lock(
    db: AsyncDatabase[Document],
) -> None:
    await prepare_database(db)
    # Another process (e.g. a long import) holds the lock for a while yet.
    until = datetime.now(UTC) + timedelta(minutes=5)
    await db[META].insert_one({"_id": WRITE_LOCK, "owner": "importer", "until": until})
    assert await asyncio.wait_for(prepare_database(db), timeout=10) == 0
    assert (await db[META].find_one({"_id": WRITE_LOCK}) or {}).get("owner") == "importer"
