"""Idempotent writes of films: upsert by TMDB id, classify each as inserted/updated/unchanged
by a content hash, bump the data version once per batch that changed anything.

On FerretDB every write to `movies` runs under `movies_write_lock`, shared by every process
on the database: a bulk update there rewrites the whole collection into a staging copy and
swaps it in, and a write landing in `movies` during the copy would vanish with the swap."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from app.db import (
    META,
    MOVIES,
    Document,
    bump_data_version,
    ensure_indexes,
    is_ferretdb,
    missing_indexes,
    movie_key,
)
from app.models.movie import ImdbInfo, MovieDocument
from app.services.normalize import content_hash, to_mongo

log = logging.getLogger("app.movies_store")


@dataclass
class WriteSummary:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def add(self, other: WriteSummary) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.rejected += other.rejected
        self.errors.extend(other.errors)

    def as_dict(self) -> dict[str, int]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }


# A counter in `meta` bumped by every batch that inserts films or changes their content: a
# `KnownHashes` read before another writer's batch is stale, and is read again.
HASH_EPOCH = "movies_hash_epoch"


class KnownHashes(dict[int, str | None]):
    """{id: content_hash} of every stored film, as of hash epoch `epoch` (None: unknown)."""

    epoch: int | None = None


async def _hash_epoch(db: AsyncDatabase[Document]) -> int:
    doc = await db[META].find_one({"_id": HASH_EPOCH})
    return int(doc["n"]) if doc else 0


async def _bump_hash_epoch(db: AsyncDatabase[Document]) -> int:
    doc = await db[META].find_one_and_update(
        {"_id": HASH_EPOCH}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    return int(doc["n"]) if doc else 0


async def existing_hashes(db: AsyncDatabase[Document]) -> KnownHashes:
    """{id: content_hash} of every stored film, in one scan (cheaper than per-batch `$in`
    queries, which FerretDB v1 answers with a full scan each). Pass it to `upsert_movies`,
    which keeps it current and reads it again when another writer changed films meanwhile."""
    known = KnownHashes()
    known.epoch = await _hash_epoch(db)  # before the scan: a write during it makes it stale
    async for d in db[MOVIES].find({}, {"_id": 0, "id": 1, "content_hash": 1}):
        known[int(d["id"])] = d.get("content_hash")
    return known


async def _lookup_hashes(db: AsyncDatabase[Document], ids: Sequence[int]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for movie_id in ids:  # `_id` equality: indexed on MongoDB, pushed down to SQLite on FerretDB
        doc = await db[MOVIES].find_one({"_id": movie_key(movie_id)}, {"content_hash": 1})
        if doc is not None:
            found[movie_id] = doc.get("content_hash")
    return found


async def upsert_movies(
    db: AsyncDatabase[Document],
    movies: Sequence[MovieDocument],
    known: dict[int, str | None] | None = None,
) -> WriteSummary:
    """Write a batch of films. Safe to rerun: the same input twice changes nothing.

    `known` (from `existing_hashes`) saves the per-film lookups during a bulk import; it is
    updated in place with what this batch wrote. On FerretDB the whole batch (reading the
    stored hashes, inserting, updating) holds `movies_write_lock`.
    """
    latest: dict[int, dict[str, Any]] = {}
    for movie in movies:  # last one wins within a batch (dedupe by id)
        doc = to_mongo(movie)
        doc["content_hash"] = content_hash(doc)
        latest[movie.id] = doc
    if not latest:
        return WriteSummary()
    async with movies_write_lock(db):
        return await _upsert(db, latest, known)


async def _upsert(
    db: AsyncDatabase[Document],
    latest: dict[int, dict[str, Any]],
    known: dict[int, str | None] | None,
) -> WriteSummary:
    summary = WriteSummary()
    if isinstance(known, KnownHashes) and known.epoch != await _hash_epoch(db):
        fresh = await existing_hashes(db)  # another writer inserted or changed films
        known.clear()
        known.update(fresh)
        known.epoch = fresh.epoch
    existing = known if known is not None else await _lookup_hashes(db, list(latest))
    now = datetime.now(UTC)
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for movie_id, doc in latest.items():
        doc["updated_at"] = now
        if movie_id not in existing:
            new.append({"_id": movie_key(movie_id), **doc})
        elif existing[movie_id] != doc["content_hash"]:
            changed.append(doc)
        else:
            summary.unchanged += 1
    if new:
        try:
            await db[MOVIES].insert_many(new, ordered=False)
        except BulkWriteError as exc:
            # A concurrent writer inserted some of these first: update those instead.
            raced = {
                new[e["index"]]["id"]
                for e in exc.details.get("writeErrors", [])
                if e.get("code") == 11000
            }
            if len(raced) != len(exc.details.get("writeErrors", [])):
                raise
            changed.extend(d for d in new if d["id"] in raced)
            new = [d for d in new if d["id"] not in raced]
        summary.inserted += len(new)
    # $set (not replace) so that the IMDB enrichment survives a TMDB re-import.
    await _apply_updates(db, {d["id"]: {k: v for k, v in d.items() if k != "_id"} for d in changed})
    summary.updated += len(changed)
    if new or changed:
        epoch_before = known.epoch if isinstance(known, KnownHashes) else None
        epoch = await _bump_hash_epoch(db)
        await bump_data_version(db)
        if isinstance(known, KnownHashes):  # still current unless someone else wrote too
            known.epoch = epoch if epoch_before is not None and epoch == epoch_before + 1 else None
    if known is not None:
        known.update({i: d["content_hash"] for i, d in latest.items()})
    return summary


async def set_imdb(db: AsyncDatabase[Document], enrichment: dict[int, ImdbInfo]) -> tuple[int, int]:
    """Attach IMDB facts to films by TMDB id; returns (updated, unchanged). Holds
    `movies_write_lock` on FerretDB."""
    if not enrichment:
        return 0, 0
    async with movies_write_lock(db):
        return await _set_imdb(db, enrichment)


async def _set_imdb(
    db: AsyncDatabase[Document], enrichment: dict[int, ImdbInfo]
) -> tuple[int, int]:
    # One scan, filtered here: FerretDB v1 evaluates a large `$in` per document, slowly.
    current = {
        d["id"]: d.get("imdb")
        async for d in db[MOVIES].find({}, {"_id": 0, "id": 1, "imdb": 1})
        if d["id"] in enrichment
    }
    updates: dict[int, dict[str, Any]] = {}
    for movie_id, info in enrichment.items():
        value = info.model_dump(mode="json")
        if movie_id in current and current[movie_id] != value:
            updates[movie_id] = {"imdb": value}
    await _apply_updates(db, updates)
    if updates:
        await bump_data_version(db)
    return len(updates), len(current) - len(updates)


# --- updates ------------------------------------------------------------------------------

# On FerretDB, past this many changed films a batch rewrites the collection instead of
# updating in place: FerretDB v1 (SQLite) scans the whole collection for every
# single-document update (pushed down to SQLite for a string `_id`, but still a scan), and a
# multi-statement update command is quadratic, while inserting into a fresh collection is
# cheap.
# Measured break-even with string `_id` (2 KB films): one rewrite = 22-30 updates at 5k-50k.
REWRITE_THRESHOLD = 25
STAGING = "movies_staging"
SWAP_MARKER = "movies_swap"


async def apply_updates(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> None:
    """`$set` the given fields on films by id (missing films are created, with their `id`).
    Holds `movies_write_lock` on FerretDB."""
    if not updates:
        return
    async with movies_write_lock(db):
        await _apply_updates(db, updates)


async def _apply_updates(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> None:
    if not updates:
        return
    await _recover_interrupted_swap(db)
    if not await is_ferretdb(db):
        ops = [
            UpdateOne({"_id": movie_key(i)}, _set_fields(i, f), upsert=True)
            for i, f in updates.items()
        ]
        await db[MOVIES].bulk_write(ops, ordered=False)
        return
    if len(updates) <= REWRITE_THRESHOLD:
        for movie_id, fields in updates.items():
            await db[MOVIES].update_one(
                {"_id": movie_key(movie_id)}, _set_fields(movie_id, fields), upsert=True
            )
        return
    await _rewrite_with(db, updates)


def _set_fields(movie_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The update document: `$set` the fields; a film created by the upsert gets its `id`."""
    if "id" in fields:
        return {"$set": fields}
    return {"$set": fields, "$setOnInsert": {"id": movie_id}}


async def _rewrite_with(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> int:
    """Copy every film into a staging collection with the updates applied and `_id` set to
    `movie_key(id)`, then swap it in; returns how many films the copy holds. Only under
    `movies_write_lock` (a write to `movies` during the copy would be lost by the swap).

    A crash before the swap leaves `movies` untouched; a crash during the swap is finished by
    `recover_interrupted_swap` on the next write (the marker says the staging copy is whole).
    """
    owner = _HOLDER.get()
    if not owner:
        raise RuntimeError("films rewritten without holding movies_write_lock")
    await db.drop_collection(STAGING)
    pending = dict(updates)
    copied = 0
    chunk: list[dict[str, Any]] = []
    async for doc in db[MOVIES].find({}):
        movie_id = int(doc["id"] if "id" in doc else doc["_id"])
        doc["_id"] = movie_key(movie_id)  # films stored before string keys get one here
        doc["id"] = movie_id
        fields = pending.pop(movie_id, None)
        if fields:
            doc.update(fields)
        chunk.append(doc)
        if len(chunk) >= 1000:
            await db[STAGING].insert_many(chunk)
            copied += len(chunk)
            chunk = []
    chunk.extend({"_id": movie_key(i), "id": i, **f} for i, f in pending.items())
    if chunk:
        await db[STAGING].insert_many(chunk)
        copied += len(chunk)
    await ensure_indexes(db, {STAGING: MOVIES})
    # Fencing: a holder that lost its lease (e.g. the database was unreachable for a whole
    # lease) may have a stale copy; it stops here and leaves `movies` as it is.
    if await db[META].find_one({"_id": WRITE_LOCK, "owner": owner}) is None:
        raise LockLostError("films write lock lost during a rewrite: the copy was not swapped in")
    await db[META].update_one(
        {"_id": SWAP_MARKER}, {"$set": {"at": datetime.now(UTC)}}, upsert=True
    )
    await _finish_swap(db)
    return copied


async def _finish_swap(db: AsyncDatabase[Document]) -> None:
    await db.drop_collection(MOVIES)
    await db[STAGING].rename(MOVIES)
    await db[META].delete_one({"_id": SWAP_MARKER})


async def recover_interrupted_swap(db: AsyncDatabase[Document]) -> None:
    """Finish a swap a killed process left half done (every write does this first)."""
    async with movies_write_lock(db, everywhere=True):
        await _recover_interrupted_swap(db)


async def _recover_interrupted_swap(db: AsyncDatabase[Document]) -> None:
    if await db[META].find_one({"_id": SWAP_MARKER}) is None:
        return
    if STAGING in await db.list_collection_names():
        await _finish_swap(db)
    else:
        await db[META].delete_one({"_id": SWAP_MARKER})


# --- startup: string keys for films stored before them ------------------------------------


async def movie_ids_need_migration(db: AsyncDatabase[Document]) -> bool:
    """Whether films are stored the old way (integer `_id`). One film in natural order
    tells: a migration rewrites them all at once. FerretDB pushes this limit down to SQLite."""
    doc = await db[MOVIES].find_one({}, {"_id": 1})
    return doc is not None and not isinstance(doc["_id"], str)


async def migrate_movie_ids(db: AsyncDatabase[Document]) -> int:
    """Rewrite a collection of films stored with an integer `_id` so that `_id` is
    `movie_key(id)`, every other field and every index kept; returns how many films were
    migrated (0 when there was nothing to do). Same staging copy and swap marker as a bulk
    update, so a kill mid-way leaves the old collection (rerun) or a whole new one
    (finished by `recover_interrupted_swap`). Holds `movies_write_lock` on every backend."""
    async with movies_write_lock(db, everywhere=True):
        return await _migrate_movie_ids(db)


async def _migrate_movie_ids(db: AsyncDatabase[Document]) -> int:
    await _recover_interrupted_swap(db)
    if not await movie_ids_need_migration(db):
        return 0
    migrated = await _rewrite_with(db, {})
    log.info("films migrated to string _id: %d", migrated)
    return migrated


async def prepare_database(db: AsyncDatabase[Document]) -> int:
    """Startup work, under `movies_write_lock` on every backend (the migration rewrites on
    MongoDB too): finish an interrupted swap, create missing indexes, migrate films to string
    `_id`. Returns how many films were migrated.

    Read-only checks first: a start with nothing to do takes no lock, so a service starting
    while a long import holds the lock batch after batch does not wait for it."""
    if not (
        await db[META].find_one({"_id": SWAP_MARKER}) is not None
        or await missing_indexes(db)
        or await movie_ids_need_migration(db)
    ):
        return 0
    async with movies_write_lock(db, everywhere=True):
        await _recover_interrupted_swap(db)
        await ensure_indexes(db)
        return await _migrate_movie_ids(db)


# --- the write lock -----------------------------------------------------------------------

WRITE_LOCK = "movies_write_lock"
# The holder refreshes its lease every quarter of it. A holder that is killed (or loses the
# database) stops refreshing, so its lock expires at most LOCK_LEASE after the last refresh
# and the next writer deletes it (`until` < now) and goes on: nothing needs cleaning by hand.
LOCK_LEASE = timedelta(seconds=60)
LOCK_POLL_SECONDS = 0.25
# The owner of the lock this task holds ("" when it was skipped on MongoDB), None when none.
_HOLDER: ContextVar[str | None] = ContextVar("movies_write_lock_holder", default=None)


class LockLostError(RuntimeError):
    """The write lock expired or was taken over while its holder was still writing."""


@asynccontextmanager
async def movies_write_lock(
    db: AsyncDatabase[Document], *, everywhere: bool = False
) -> AsyncIterator[None]:
    """Exclusive right to write `movies`, shared by every process on the database: a lease
    document `{_id: "movies_write_lock", owner, until}` in `meta`. On FerretDB every write
    takes it; on MongoDB (bulk updates in place, no rewrite) only `everywhere=True` does, for
    the startup migration, which rewrites on every backend. A writer that finds it held
    waits (and says so once) until it is released or its lease runs out.

    Not reentrant: taking it again in the same task raises instead of waiting forever, so
    public functions take it and call internal (`_`) ones that expect it held."""
    if _HOLDER.get() is not None:
        raise RuntimeError("movies_write_lock is already held by this task (not reentrant)")
    if not everywhere and not await is_ferretdb(db):
        token = _HOLDER.set("")
        try:
            yield
        finally:
            _HOLDER.reset(token)
        return
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    await _acquire(db, owner)
    refresher = asyncio.create_task(_keep_lease(db, owner))
    token = _HOLDER.set(owner)
    try:
        yield
    finally:
        _HOLDER.reset(token)
        refresher.cancel()
        try:
            await db[META].delete_one({"_id": WRITE_LOCK, "owner": owner})
        except PyMongoError as exc:  # not fatal: the lease runs out
            log.warning(
                "films write lock not released (%s): it expires within %s",
                exc.__class__.__name__,
                LOCK_LEASE,
            )


async def _acquire(db: AsyncDatabase[Document], owner: str) -> None:
    started: float | None = None
    while True:
        now = datetime.now(UTC)
        await db[META].delete_one({"_id": WRITE_LOCK, "until": {"$lt": now}})  # expired
        try:
            await db[META].insert_one(
                {"_id": WRITE_LOCK, "owner": owner, "since": now, "until": now + LOCK_LEASE}
            )
        except DuplicateKeyError:
            if started is None:
                started = time.monotonic()
                holder = await db[META].find_one({"_id": WRITE_LOCK})
                log.info(
                    "waiting for another writer of films (lock held by %s)",
                    holder.get("owner") if holder else "?",
                )
            await asyncio.sleep(LOCK_POLL_SECONDS)
            continue
        if started is not None:
            log.info("films write lock taken after %.1f s", time.monotonic() - started)
        return


async def _keep_lease(db: AsyncDatabase[Document], owner: str) -> None:
    while True:
        await asyncio.sleep(LOCK_LEASE.total_seconds() / 4)
        until = datetime.now(UTC) + LOCK_LEASE
        try:
            result = await db[META].update_one(
                {"_id": WRITE_LOCK, "owner": owner}, {"$set": {"until": until}}
            )
        except PyMongoError as exc:  # the holder's own work fails too and releases it
            log.warning("films write lock not refreshed: %s", exc.__class__.__name__)
            continue
        if result.matched_count == 0:
            log.warning("films write lock lost (held past its lease)")
            return
