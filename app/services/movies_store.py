"""Idempotent writes of films: upsert by TMDB id, classify each as inserted/updated/unchanged
by a content hash, bump the data version once per batch that changed anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from app.db import META, MOVIES, Document, bump_data_version, ensure_indexes, is_ferretdb
from app.models.movie import ImdbInfo, MovieDocument
from app.services.normalize import content_hash, to_mongo


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


async def existing_hashes(db: AsyncDatabase[Document]) -> dict[int, str | None]:
    """{id: content_hash} of every stored film, in one scan (cheaper than per-batch `$in`
    queries, which FerretDB v1 answers with a full scan each)."""
    return {
        int(d["_id"]): d.get("content_hash")
        async for d in db[MOVIES].find({}, {"_id": 1, "content_hash": 1})
    }


async def _lookup_hashes(db: AsyncDatabase[Document], ids: Sequence[int]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for movie_id in ids:  # `_id` equality is an indexed lookup on every backend
        doc = await db[MOVIES].find_one({"_id": movie_id}, {"_id": 1, "content_hash": 1})
        if doc is not None:
            found[movie_id] = doc.get("content_hash")
    return found


async def upsert_movies(
    db: AsyncDatabase[Document],
    movies: Sequence[MovieDocument],
    known: dict[int, str | None] | None = None,
) -> WriteSummary:
    """Write a batch of films. Safe to rerun: the same input twice changes nothing.

    `known` ({id: content_hash} from `existing_hashes`) saves the per-film lookups during a
    bulk import; it is updated in place with what this batch wrote.
    """
    summary = WriteSummary()
    latest: dict[int, dict[str, Any]] = {}
    for movie in movies:  # last one wins within a batch (dedupe by id)
        doc = to_mongo(movie)
        doc["content_hash"] = content_hash(doc)
        latest[movie.id] = doc
    if not latest:
        return summary
    existing = known if known is not None else await _lookup_hashes(db, list(latest))
    now = datetime.now(UTC)
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for movie_id, doc in latest.items():
        doc["updated_at"] = now
        if movie_id not in existing:
            new.append({"_id": movie_id, **doc})
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
                new[e["index"]]["_id"]
                for e in exc.details.get("writeErrors", [])
                if e.get("code") == 11000
            }
            if len(raced) != len(exc.details.get("writeErrors", [])):
                raise
            changed.extend(d for d in new if d["_id"] in raced)
            new = [d for d in new if d["_id"] not in raced]
        summary.inserted += len(new)
    # $set (not replace) so that the IMDB enrichment survives a TMDB re-import.
    await apply_updates(db, {d["id"]: {k: v for k, v in d.items() if k != "_id"} for d in changed})
    summary.updated += len(changed)
    if new or changed:
        await bump_data_version(db)
    if known is not None:
        known.update({i: d["content_hash"] for i, d in latest.items()})
    return summary


async def set_imdb(db: AsyncDatabase[Document], enrichment: dict[int, ImdbInfo]) -> tuple[int, int]:
    """Attach IMDB facts to films by TMDB id; returns (updated, unchanged)."""
    if not enrichment:
        return 0, 0
    # One scan, filtered here: FerretDB v1 evaluates a large `$in` per document, slowly.
    current = {
        d["_id"]: d.get("imdb")
        async for d in db[MOVIES].find({}, {"_id": 1, "imdb": 1})
        if d["_id"] in enrichment
    }
    updates: dict[int, dict[str, Any]] = {}
    for movie_id, info in enrichment.items():
        value = info.model_dump(mode="json")
        if movie_id in current and current[movie_id] != value:
            updates[movie_id] = {"imdb": value}
    await apply_updates(db, updates)
    if updates:
        await bump_data_version(db)
    return len(updates), len(current) - len(updates)


# --- updates ------------------------------------------------------------------------------

# On FerretDB, past this many changed films a batch rewrites the collection instead of
# updating in place: FerretDB v1 (SQLite) scans the whole collection for every
# single-document update (~0.03 ms per stored film), and a multi-statement update command
# is quadratic, while inserting into a fresh collection is cheap.
REWRITE_THRESHOLD = 20
STAGING = "movies_staging"
SWAP_MARKER = "movies_swap"


async def apply_updates(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> None:
    """`$set` the given fields on films by id (missing films are created)."""
    if not updates:
        return
    await recover_interrupted_swap(db)
    if not await is_ferretdb(db):
        ops = [UpdateOne({"_id": i}, {"$set": f}, upsert=True) for i, f in updates.items()]
        await db[MOVIES].bulk_write(ops, ordered=False)
        return
    if len(updates) <= REWRITE_THRESHOLD:
        for movie_id, fields in updates.items():
            await db[MOVIES].update_one({"_id": movie_id}, {"$set": fields}, upsert=True)
        return
    await _rewrite_with(db, updates)


async def _rewrite_with(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> None:
    """Copy every film into a staging collection with the updates applied, then swap it in.

    A crash before the swap leaves `movies` untouched; a crash during the swap is finished by
    `recover_interrupted_swap` on the next write (the marker says the staging copy is whole).
    """
    await db.drop_collection(STAGING)
    pending = dict(updates)
    chunk: list[dict[str, Any]] = []
    async for doc in db[MOVIES].find({}):
        fields = pending.pop(int(doc["_id"]), None)
        if fields:
            doc.update(fields)
        chunk.append(doc)
        if len(chunk) >= 1000:
            await db[STAGING].insert_many(chunk)
            chunk = []
    chunk.extend({"_id": i, **f} for i, f in pending.items())
    if chunk:
        await db[STAGING].insert_many(chunk)
    await ensure_indexes(db, {STAGING: MOVIES})
    await db[META].update_one(
        {"_id": SWAP_MARKER}, {"$set": {"at": datetime.now(UTC)}}, upsert=True
    )
    await _finish_swap(db)


async def _finish_swap(db: AsyncDatabase[Document]) -> None:
    await db.drop_collection(MOVIES)
    await db[STAGING].rename(MOVIES)
    await db[META].delete_one({"_id": SWAP_MARKER})


async def recover_interrupted_swap(db: AsyncDatabase[Document]) -> None:
    if await db[META].find_one({"_id": SWAP_MARKER}) is None:
        return
    if STAGING in await db.list_collection_names():
        await _finish_swap(db)
    else:
        await db[META].delete_one({"_id": SWAP_MARKER})
