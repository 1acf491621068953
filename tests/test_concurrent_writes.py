"""Several writers on one database at once (e.g. a CSV import in a terminal while `ingest tmdb`
runs): on FerretDB a bulk update rewrites `movies` into a staging copy and swaps it in, so
every write takes `movies_write_lock`; nothing written by either writer may be lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.models.movie import MovieDocument
from app.services import movies_rewrite, movies_store
from app.services import movies_write_lock as write_lock
from app.services.indexes import ensure_indexes
from app.services.meta_repo import META, WRITE_LOCK
from app.services.movies_repo import MOVIES, STAGING, index_staging
from app.services.movies_rewrite import REWRITE_THRESHOLD
from app.services.movies_store import KnownHashes, existing_hashes, upsert_movies
from app.services.movies_write_lock import movies_write_lock
from app.services.normalize import to_movie


def film(movie_id: int, title: str) -> MovieDocument:
    return to_movie(
        {
            "id": movie_id,
            "title": title,
            "release_date": "2001-05-04",
            "genres": [{"id": 18, "name": "Drama"}],
            "vote_average": 6.0,
            "vote_count": 10,
        },
        "tmdb-api",
    )


def films(ids: range, title: str) -> list[MovieDocument]:
    return [film(i, f"{title} {i}") for i in ids]


@pytest.fixture
async def other(
    mongodb_uri: str, db: AsyncDatabase[Document]
) -> AsyncIterator[AsyncDatabase[Document]]:
    """The same database through a second client, as another process would see it."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        yield client[db.name]
    finally:
        await client.close()


async def titles(db: AsyncDatabase[Document]) -> dict[int, str]:
    """{id: title}, asserting that no film is stored twice."""
    docs = [d async for d in db[MOVIES].find({}, {"_id": 1, "id": 1, "title": 1})]
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "a film is stored twice"
    assert all(d["_id"] == str(d["id"]) for d in docs)
    return {d["id"]: d["title"] for d in docs}


async def assert_clean(db: AsyncDatabase[Document]) -> None:
    assert await db[META].find_one({"_id": WRITE_LOCK}) is None, "the lock was not released"
    assert STAGING not in await db.list_collection_names()


async def test_inserts_during_a_rewrite_are_not_lost(
    db: AsyncDatabase[Document],
    other: AsyncDatabase[Document],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await ensure_indexes(db)
    await upsert_movies(db, films(range(1, 101), "old"))
    rewritten = range(1, 2 * REWRITE_THRESHOLD + 1)  # > REWRITE_THRESHOLD changed: a rewrite
    copied = asyncio.Event()

    async def slow_indexes(database: AsyncDatabase[Document]) -> None:
        copied.set()  # the copy is done, the swap comes next
        await asyncio.sleep(1.0)
        await index_staging(database)

    monkeypatch.setattr(movies_rewrite, "index_staging", slow_indexes)

    async def rewrite() -> movies_store.WriteSummary:
        return await upsert_movies(db, films(rewritten, "A"))

    async def insert_while_copying() -> list[movies_store.WriteSummary]:
        await asyncio.wait_for(copied.wait(), 30)
        known = await existing_hashes(other)  # an importer's view, read during the copy
        batches = [films(range(b, b + 10), "B") for b in range(1001, 1031, 10)]
        batches.append(films(range(91, 96), "B"))  # and a few small in-place updates
        return [await upsert_movies(other, batch, known) for batch in batches]

    summary_a, summaries_b = await asyncio.gather(rewrite(), insert_while_copying())

    stored = await titles(db)
    expected = {i: f"old {i}" for i in range(1, 101)}
    expected |= {i: f"A {i}" for i in rewritten}
    expected |= {i: f"B {i}" for i in [*range(1001, 1031), *range(91, 96)]}
    assert stored == expected
    assert summary_a.updated == len(rewritten)
    assert sum(s.inserted for s in summaries_b) == 30
    assert sum(s.updated for s in summaries_b) == 5
    await assert_clean(db)


async def test_two_rewrites_and_an_import_at_once_lose_nothing(
    db: AsyncDatabase[Document], other: AsyncDatabase[Document], mongodb_uri: str
) -> None:
    await ensure_indexes(db)
    await upsert_movies(db, films(range(1, 201), "old"))
    third_client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    third = third_client[db.name]

    async def importer() -> int:
        known = await existing_hashes(third)
        inserted = 0
        for start in range(1001, 1101, 10):
            inserted += (
                await upsert_movies(third, films(range(start, start + 10), "C"), known)
            ).inserted
        return inserted

    try:
        a, b, inserted = await asyncio.gather(
            upsert_movies(db, films(range(1, 61), "A")),
            upsert_movies(other, films(range(61, 121), "B")),
            importer(),
        )
    finally:
        await third_client.close()

    expected = {i: f"old {i}" for i in range(121, 201)}
    expected |= {i: f"A {i}" for i in range(1, 61)}
    expected |= {i: f"B {i}" for i in range(61, 121)}
    expected |= {i: f"C {i}" for i in range(1001, 1101)}
    assert await titles(db) == expected
    assert (a.updated, b.updated, inserted) == (60, 60, 100)
    await assert_clean(db)


async def test_hashes_read_before_another_writer_are_read_again(
    db: AsyncDatabase[Document],
    other: AsyncDatabase[Document],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await upsert_movies(db, films(range(1, 11), "old"))
    known = await existing_hashes(db)
    assert isinstance(known, KnownHashes)
    reads = 0
    real_existing = movies_store.existing_hashes

    async def counting(database: AsyncDatabase[Document]) -> KnownHashes:
        nonlocal reads
        reads += 1
        return await real_existing(database)

    monkeypatch.setattr(movies_store, "existing_hashes", counting)
    # Our own writes keep `known` current: no reread.
    assert (await upsert_movies(db, [film(11, "new 11")], known)).inserted == 1
    assert (await upsert_movies(db, [film(12, "new 12")], known)).inserted == 1
    assert reads == 0
    # Another writer changes film 5 and inserts film 13 in between.
    await upsert_movies(other, [film(5, "other 5"), film(13, "other 13")])
    summary = await upsert_movies(db, [film(5, "old 5"), film(13, "other 13")], known)
    assert reads == 1
    assert summary.as_dict() == {"inserted": 0, "updated": 1, "unchanged": 1, "rejected": 0}
    stored = await titles(db)
    assert stored[5] == "old 5" and stored[13] == "other 13" and len(stored) == 13


async def test_a_stale_lock_does_not_block(db: AsyncDatabase[Document]) -> None:
    """A lock whose lease ran out (its holder was killed and stopped refreshing it)."""
    stale = datetime.now(UTC) - timedelta(seconds=1)
    await db[META].insert_one({"_id": WRITE_LOCK, "owner": "killed:1:dead", "until": stale})
    summary = await asyncio.wait_for(upsert_movies(db, films(range(1, 4), "t")), 10)
    assert summary.inserted == 3
    await assert_clean(db)


async def test_a_live_lock_makes_a_writer_wait_not_fail(
    db: AsyncDatabase[Document], caplog: pytest.LogCaptureFixture
) -> None:
    until = datetime.now(UTC) + timedelta(seconds=60)
    await db[META].insert_one({"_id": WRITE_LOCK, "owner": "elsewhere:1:live", "until": until})
    with caplog.at_level(logging.INFO, logger="app.movies_store"):
        writer = asyncio.create_task(upsert_movies(db, films(range(1, 4), "t")))
        await asyncio.sleep(1.5)
        assert not writer.done(), "the writer must wait for the holder"
        assert await db[MOVIES].count_documents({}) == 0
        await db[META].delete_one({"_id": WRITE_LOCK})  # the holder finishes
        summary = await asyncio.wait_for(writer, 10)
    assert summary.inserted == 3
    waits = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1 and "elsewhere:1:live" in waits[0].getMessage()
    await assert_clean(db)


async def test_the_holder_keeps_its_lease(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(write_lock, "LOCK_LEASE", timedelta(seconds=3))  # refreshed per 0.75 s
    held, done = asyncio.Event(), asyncio.Event()

    async def long_writer() -> None:
        async with movies_write_lock(db):
            held.set()
            await done.wait()

    holder = asyncio.create_task(long_writer())
    await asyncio.wait_for(held.wait(), 10)
    first = await db[META].find_one({"_id": WRITE_LOCK})
    writer = asyncio.create_task(upsert_movies(db, films(range(1, 4), "t")))
    await asyncio.sleep(4)  # longer than a lease
    assert not writer.done(), "a live holder's lock must not expire"
    now = await db[META].find_one({"_id": WRITE_LOCK})
    assert first is not None and now is not None and now["owner"] == first["owner"]
    assert now["until"] > first["until"]
    done.set()
    await holder
    assert (await asyncio.wait_for(writer, 10)).inserted == 3
    await assert_clean(db)


async def test_the_lock_is_not_reentrant(db: AsyncDatabase[Document]) -> None:
    async with movies_write_lock(db):
        with pytest.raises(RuntimeError, match="not reentrant"):
            await asyncio.wait_for(upsert_movies(db, [film(1, "t")]), 5)
    await assert_clean(db)


async def test_writers_skip_the_lock_on_mongodb(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def mongodb(database: AsyncDatabase[Document]) -> bool:
        return False

    monkeypatch.setattr(write_lock, "is_ferretdb", mongodb)
    monkeypatch.setattr(movies_rewrite, "is_ferretdb", mongodb)
    until = datetime.now(UTC) + timedelta(seconds=60)
    await db[META].insert_one({"_id": WRITE_LOCK, "owner": "elsewhere:1:live", "until": until})
    summary = await asyncio.wait_for(upsert_movies(db, films(range(1, 4), "t")), 5)
    assert summary.inserted == 3
