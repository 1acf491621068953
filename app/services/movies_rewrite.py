"""Bulk updates of films, and rewriting `movies` whole: a staging copy swapped in, the recovery
of a swap a killed process left half done, the migration of films stored with an integer
`_id`, and the startup work (`prepare_database`) that runs them.

Every function here runs under `movies_write_lock`: the public ones take it, the `*_locked`
ones expect their caller to hold it."""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document, is_ferretdb
from app.services import change_log, meta_repo
from app.services.indexes import ensure_indexes, missing_indexes
from app.services.movies_repo import (
    drop_staging,
    first_key,
    index_staging,
    insert_staging,
    movie_key,
    replace_with_staging,
    scan,
    staging_exists,
    update_in_bulk,
    update_one_by_one,
)
from app.services.movies_write_lock import LockLostError, lock_owner, movies_write_lock

log = logging.getLogger("app.movies_store")  # one logger for every write of films

# On FerretDB, past this many changed films a batch rewrites the collection instead of
# updating in place: FerretDB v1 (SQLite) scans the whole collection for every
# single-document update (pushed down to SQLite for a string `_id`, but still a scan), and a
# multi-statement update command is quadratic, while inserting into a fresh collection is
# cheap.
# Measured break-even with string `_id` (2 KB films): one rewrite = 22-30 updates at 5k-50k.
REWRITE_THRESHOLD = 25


async def apply_updates(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> None:
    """`$set` the given fields on films by id (missing films are created, with their `id`).
    Holds `movies_write_lock` on FerretDB; the films are logged (`change_log`) and the data
    version bumped, like every write of films."""
    if not updates:
        return
    async with movies_write_lock(db):
        async with change_log.recorded(db, updates):
            await apply_updates_locked(db, updates)
        await meta_repo.bump_data_version(db)


async def apply_updates_locked(
    db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]
) -> None:
    """`apply_updates` for a caller that holds the lock and logs the films itself."""
    if not updates:
        return
    await recover_swap_locked(db)
    if not await is_ferretdb(db):
        await update_in_bulk(db, updates)
    elif len(updates) <= REWRITE_THRESHOLD:
        await update_one_by_one(db, updates)
    else:
        await _rewrite_with(db, updates)


async def _rewrite_with(db: AsyncDatabase[Document], updates: dict[int, dict[str, Any]]) -> int:
    """Copy every film into a staging collection with the updates applied and `_id` set to
    `movie_key(id)`, then swap it in; returns how many films the copy holds. Only under
    `movies_write_lock` (a write to `movies` during the copy would be lost by the swap).

    A crash before the swap leaves `movies` untouched; a crash during the swap is finished by
    `recover_interrupted_swap` on the next write (the marker says the staging copy is whole).
    """
    owner = lock_owner()
    if not owner:
        raise RuntimeError("films rewritten without holding movies_write_lock")
    await drop_staging(db)
    pending = dict(updates)
    copied = 0
    chunk: list[dict[str, Any]] = []
    async for doc in scan(db, None):
        movie_id = int(doc["id"] if "id" in doc else doc["_id"])
        doc["_id"] = movie_key(movie_id)  # films stored before string keys get one here
        doc["id"] = movie_id
        fields = pending.pop(movie_id, None)
        if fields:
            doc.update(fields)
        chunk.append(doc)
        if len(chunk) >= 1000:
            await insert_staging(db, chunk)
            copied += len(chunk)
            chunk = []
    chunk.extend({"_id": movie_key(i), "id": i, **f} for i, f in pending.items())
    if chunk:
        await insert_staging(db, chunk)
        copied += len(chunk)
    await index_staging(db)
    # Fencing: a holder that lost its lease (e.g. the database was unreachable for a whole
    # lease) may have a stale copy; it stops here and leaves `movies` as it is.
    if not await meta_repo.holds_lock(db, owner):
        raise LockLostError("films write lock lost during a rewrite: the copy was not swapped in")
    await meta_repo.mark_swap(db)
    await _finish_swap(db)
    return copied


async def _finish_swap(db: AsyncDatabase[Document]) -> None:
    await replace_with_staging(db)
    await meta_repo.clear_swap_mark(db)


async def recover_interrupted_swap(db: AsyncDatabase[Document]) -> None:
    """Finish a swap a killed process left half done (every write does this first)."""
    async with movies_write_lock(db, everywhere=True):
        await recover_swap_locked(db)


async def recover_swap_locked(db: AsyncDatabase[Document]) -> None:
    if not await meta_repo.swap_marked(db):
        return
    if await staging_exists(db):
        await _finish_swap(db)
    else:
        await meta_repo.clear_swap_mark(db)


# --- startup: string keys for films stored before them ------------------------------------


async def movie_ids_need_migration(db: AsyncDatabase[Document]) -> bool:
    """Whether films are stored the old way (integer `_id`). One film in natural order
    tells: a migration rewrites them all at once."""
    key = await first_key(db)
    return key is not None and not isinstance(key, str)


async def migrate_movie_ids(db: AsyncDatabase[Document]) -> int:
    """Rewrite a collection of films stored with an integer `_id` so that `_id` is
    `movie_key(id)`, every other field and every index kept; returns how many films were
    migrated (0 when there was nothing to do). Same staging copy and swap marker as a bulk
    update, so a kill mid-way leaves the old collection (rerun) or a whole new one
    (finished by `recover_interrupted_swap`). Holds `movies_write_lock` on every backend."""
    async with movies_write_lock(db, everywhere=True):
        return await _migrate_movie_ids(db)


async def _migrate_movie_ids(db: AsyncDatabase[Document]) -> int:
    await recover_swap_locked(db)
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
        await meta_repo.swap_marked(db)
        or await missing_indexes(db)
        or await movie_ids_need_migration(db)
    ):
        return 0
    async with movies_write_lock(db, everywhere=True):
        await recover_swap_locked(db)
        await ensure_indexes(db)
        return await _migrate_movie_ids(db)
