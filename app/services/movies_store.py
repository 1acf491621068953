"""Idempotent writes of films: upsert by TMDB id, classify each as inserted/updated/unchanged
by a content hash, bump the data version once per batch that changed anything, and hand the
revenues, votes and ratings of predicted films to `outcomes` (live accuracy).

On FerretDB every write to `movies` runs under `movies_write_lock` (see there why); updates
of many films at once rewrite the collection (`movies_rewrite`). Every batch that changes
films logs their ids first (`change_log.recorded`), so the analytics snapshot re-reads just
those."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from app.db import Document
from app.models.movie import ImdbInfo, MovieDocument
from app.services import change_log, meta_repo, movies_repo, outcomes
from app.services.movies_repo import content_hash_of, insert_movies, movie_key, scan
from app.services.movies_rewrite import apply_updates_locked
from app.services.movies_write_lock import movies_write_lock
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
        return write_counts(self)


class WriteCounts(Protocol):
    inserted: int
    updated: int
    unchanged: int
    rejected: int


def write_counts(counts: WriteCounts) -> dict[str, int]:
    """The four counts of films written, as every summary reports them."""
    return {
        "inserted": counts.inserted,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "rejected": counts.rejected,
    }


class KnownHashes(dict[int, str | None]):
    """{id: content_hash} of every stored film, as of hash epoch `epoch` (None: unknown).

    The hash epoch (in `meta`) is bumped by every batch that inserts films or changes their
    content: hashes read before another writer's batch are stale, and are read again."""

    epoch: int | None = None


async def existing_hashes(db: AsyncDatabase[Document]) -> KnownHashes:
    """{id: content_hash} of every stored film, in one scan (cheaper than per-batch `$in`
    queries, which FerretDB v1 answers with a full scan each). Pass it to `upsert_movies`,
    which keeps it current and reads it again when another writer changed films meanwhile."""
    known = KnownHashes()
    # The epoch before the scan: a write during it makes the hashes stale.
    known.epoch = await meta_repo.hash_epoch(db)
    async for d in scan(db, {"_id": 0, "id": 1, "content_hash": 1}):
        known[int(d["id"])] = d.get("content_hash")
    return known


async def _lookup_hashes(db: AsyncDatabase[Document], ids: Sequence[int]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for movie_id in ids:  # `_id` equality: indexed on MongoDB, pushed down to SQLite on FerretDB
        stored, stored_hash = await content_hash_of(db, movie_id)
        if stored:
            found[movie_id] = stored_hash
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
    unchanged: set[int] = set()
    async with movies_write_lock(db):
        summary = await _upsert(db, latest, known, unchanged)
    # A revenue, or the votes of a released film, that arrives for a film the service
    # predicted is that prediction's outcome (live accuracy). Unchanged films count too: the
    # prediction may be newer than the film. But an unchanged film tells nothing new, so
    # it never replaces an outcome already recorded (a partner's, posted since).
    await outcomes.record_from_catalogue(db, latest, unchanged)
    return summary


async def _upsert(
    db: AsyncDatabase[Document],
    latest: dict[int, dict[str, Any]],
    known: dict[int, str | None] | None,
    unchanged: set[int],
) -> WriteSummary:
    """Write the films that are new or changed; the ids of the others go into `unchanged`."""
    summary = WriteSummary()
    if isinstance(known, KnownHashes) and known.epoch != await meta_repo.hash_epoch(db):
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
            unchanged.add(movie_id)
    if new or changed:
        async with change_log.recorded(db, [d["id"] for d in (*new, *changed)]):
            new = await _insert_new(db, new, changed)
            # $set (not replace) so that the IMDB enrichment survives a TMDB re-import.
            await apply_updates_locked(
                db, {d["id"]: {k: v for k, v in d.items() if k != "_id"} for d in changed}
            )
        summary.inserted += len(new)
        summary.updated += len(changed)
        epoch_before = known.epoch if isinstance(known, KnownHashes) else None
        epoch = await meta_repo.bump_hash_epoch(db)
        await meta_repo.bump_data_version(db)
        if isinstance(known, KnownHashes):  # still current unless someone else wrote too
            known.epoch = epoch if epoch_before is not None and epoch == epoch_before + 1 else None
    if known is not None:
        known.update({i: d["content_hash"] for i, d in latest.items()})
    return summary


async def _insert_new(
    db: AsyncDatabase[Document], new: list[dict[str, Any]], changed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Insert `new`; the films a concurrent writer inserted first move to `changed` (updated
    instead). Returns the films this call inserted."""
    if not new:
        return new
    try:
        await insert_movies(db, new)
    except BulkWriteError as exc:
        raced = {
            new[e["index"]]["id"]
            for e in exc.details.get("writeErrors", [])
            if e.get("code") == 11000
        }
        if len(raced) != len(exc.details.get("writeErrors", [])):
            raise
        changed.extend(d for d in new if d["id"] in raced)
        return [d for d in new if d["id"] not in raced]
    return new


async def delete_movies(db: AsyncDatabase[Document], movie_ids: Sequence[int]) -> int:
    """Delete films by TMDB id (unknown ids are ignored); returns how many were deleted.
    Holds `movies_write_lock` on FerretDB; logged like every write of films."""
    ids = sorted(set(movie_ids))
    if not ids:
        return 0
    async with movies_write_lock(db):
        async with change_log.recorded(db, ids):
            deleted = await movies_repo.delete_movies(db, ids)
        if deleted:
            await meta_repo.bump_hash_epoch(db)  # hashes read before say these films exist
            await meta_repo.bump_data_version(db)
    return deleted


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
        async for d in scan(db, {"_id": 0, "id": 1, "imdb": 1})
        if d["id"] in enrichment
    }
    updates: dict[int, dict[str, Any]] = {}
    for movie_id, info in enrichment.items():
        value = info.model_dump(mode="json")
        if movie_id in current and current[movie_id] != value:
            updates[movie_id] = {"imdb": value}
    if updates:
        async with change_log.recorded(db, updates):
            await apply_updates_locked(db, updates)
        await meta_repo.bump_data_version(db)
    return len(updates), len(current) - len(updates)
