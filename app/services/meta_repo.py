"""`meta`: small documents of state shared by every process on the database. The only module
that reads or writes `meta`:

* `data_version` (`version`): bumped by every write batch; analytics caches key on it.
* `movies_hash_epoch` (`n`): bumped by every batch that inserts films or changes their
  content, so that stored hashes read before another writer's batch are known to be stale
  (`app.services.movies_store`).
* `movies_write_lock` (`owner`, `since`, `until`): the lease of the films write lock
  (`app.services.movies_write_lock`).
* `movies_swap` (`at`): a staging copy of `movies` is whole and being swapped in
  (`app.services.movies_rewrite`).
* `job:<name>` (`at`, `by`): when a periodic job last ran, so that one process at a time runs
  it (`claim_job`; e.g. the prediction log's retention).
* `catalogue` (`id`, `swaps`): a random id given to this database's catalogue the first time
  it is asked for (a persisted snapshot names the catalogue it was read from, so a snapshot
  of another database, or of one dropped and refilled, is never taken for this one), and how
  many times `movies` was swapped for a staging copy (a snapshot read spanning a swap may
  have seen the collection half gone, and is done again).
* `change_log` (`seq`, `pruned`): the last sequence number given to an entry of the films
  change log, and the highest one pruned (`app.services.change_log`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from app.db import Document

META = "meta"
DATA_VERSION_ID = "data_version"
HASH_EPOCH = "movies_hash_epoch"
WRITE_LOCK = "movies_write_lock"
SWAP_MARKER = "movies_swap"
CATALOGUE = "catalogue"
CHANGE_LOG = "change_log"


async def _increment(db: AsyncDatabase[Document], doc_id: str, update: Document) -> Document:
    doc = await db[META].find_one_and_update(
        {"_id": doc_id}, update, upsert=True, return_document=ReturnDocument.AFTER
    )
    return doc or {}


# --- the data version -----------------------------------------------------------------------


async def bump_data_version(db: AsyncDatabase[Document]) -> int:
    """Every write batch bumps this; analytics caches key on it."""
    doc = await _increment(
        db, DATA_VERSION_ID, {"$inc": {"version": 1}, "$set": {"updated_at": datetime.now(UTC)}}
    )
    return int(doc.get("version", 0))


async def raise_data_version(
    db: AsyncDatabase[Document], floor: int, collection: str = META
) -> int:
    """Set the data version in `collection` (`meta`, or a restore's staging copy of it before
    it is swapped in) above both its own value and `floor`, the live version it replaces: no
    version number is ever reused for other data, so every cache, snapshot and ETag keyed on
    it is rebuilt.

    The catalogue also gets a new random id there: the films were replaced without the change
    log, whose sequence numbers (restored with it, or not) say nothing of the films a snapshot
    taken before holds. A newer data version alone would let a persisted snapshot be caught up
    from the log, so every snapshot of the data before, on disk or in memory, has to belong
    to another catalogue and be read again in full (`app.services.analytics.refresh`)."""
    await db[collection].update_one(
        {"_id": CATALOGUE},
        {"$set": {"id": uuid.uuid4().hex, "named_at": datetime.now(UTC)}},
        upsert=True,
    )
    await db[collection].update_one(
        {"_id": DATA_VERSION_ID}, {"$max": {"version": int(floor)}}, upsert=True
    )
    doc = await db[collection].find_one_and_update(
        {"_id": DATA_VERSION_ID},
        {"$inc": {"version": 1}, "$set": {"updated_at": datetime.now(UTC)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return int((doc or {}).get("version", 0))


async def get_data_version(db: AsyncDatabase[Document]) -> int:
    doc = await db[META].find_one({"_id": DATA_VERSION_ID})
    return int(doc["version"]) if doc else 0


# --- the hash epoch -------------------------------------------------------------------------


async def hash_epoch(db: AsyncDatabase[Document]) -> int:
    doc = await db[META].find_one({"_id": HASH_EPOCH})
    return int(doc["n"]) if doc else 0


async def bump_hash_epoch(db: AsyncDatabase[Document]) -> int:
    doc = await _increment(db, HASH_EPOCH, {"$inc": {"n": 1}})
    return int(doc.get("n", 0))


# --- the films write lock's lease -----------------------------------------------------------


async def take_lock(
    db: AsyncDatabase[Document], owner: str, now: datetime, until: datetime
) -> bool:
    """Take the lease unless someone holds it: an expired lease is deleted first."""
    await db[META].delete_one({"_id": WRITE_LOCK, "until": {"$lt": now}})
    try:
        await db[META].insert_one({"_id": WRITE_LOCK, "owner": owner, "since": now, "until": until})
    except DuplicateKeyError:
        return False
    return True


async def lock_holder(db: AsyncDatabase[Document]) -> str | None:
    """The owner of the lease, None when nobody holds it."""
    doc = await db[META].find_one({"_id": WRITE_LOCK})
    return str(doc.get("owner")) if doc else None


async def holds_lock(db: AsyncDatabase[Document], owner: str) -> bool:
    return await db[META].find_one({"_id": WRITE_LOCK, "owner": owner}) is not None


async def extend_lock(db: AsyncDatabase[Document], owner: str, until: datetime) -> bool:
    """Move `owner`'s lease on to `until`; False when it holds the lease no more."""
    result = await db[META].update_one(
        {"_id": WRITE_LOCK, "owner": owner}, {"$set": {"until": until}}
    )
    return result.matched_count > 0


async def release_lock(db: AsyncDatabase[Document], owner: str) -> None:
    await db[META].delete_one({"_id": WRITE_LOCK, "owner": owner})


# --- the swap marker ------------------------------------------------------------------------


async def swap_marked(db: AsyncDatabase[Document]) -> bool:
    return await db[META].find_one({"_id": SWAP_MARKER}) is not None


async def mark_swap(db: AsyncDatabase[Document]) -> None:
    """Mark a swap as begun, and count it (before the marker: a reader that saw neither the
    marker nor a new count read no part of the swap)."""
    await _upsert_catalogue(db, {"$inc": {"swaps": 1}})
    await db[META].update_one(
        {"_id": SWAP_MARKER}, {"$set": {"at": datetime.now(UTC)}}, upsert=True
    )


async def clear_swap_mark(db: AsyncDatabase[Document]) -> None:
    await db[META].delete_one({"_id": SWAP_MARKER})


# --- periodic jobs --------------------------------------------------------------------------


async def claim_job(db: AsyncDatabase[Document], job: str, every: timedelta, holder: str) -> bool:
    """Whether `holder` may run `job` now: true for one caller per `every` across every
    process on the database (document `job:<job>`: `at`, `by`), false for the others."""
    now = datetime.now(UTC)
    try:
        result = await db[META].update_one(
            {"_id": f"job:{job}", "at": {"$lt": now - every}},
            {"$set": {"at": now, "by": holder}},
            upsert=True,
        )
    except DuplicateKeyError:  # the document is there and recent: someone else ran it
        return False
    return result.matched_count > 0 or result.upserted_id is not None


# --- the catalogue's identity and the change log's counters ---------------------------------


async def _upsert_catalogue(db: AsyncDatabase[Document], update: Document) -> None:
    """Update the catalogue document, creating it with a new random id when absent. Every
    upsert of it carries the `$setOnInsert`, so it never exists without an id."""
    full = {**update, "$setOnInsert": {"id": uuid.uuid4().hex}}
    try:
        await db[META].update_one({"_id": CATALOGUE}, full, upsert=True)
    except DuplicateKeyError:  # two processes created it at once: it exists now
        await db[META].update_one({"_id": CATALOGUE}, update)


async def next_change_seq(db: AsyncDatabase[Document]) -> int:
    """A new sequence number for a change-log entry (1, 2, ...)."""
    doc = await _increment(db, CHANGE_LOG, {"$inc": {"seq": 1}})
    return int(doc.get("seq", 0))


async def set_changes_pruned(db: AsyncDatabase[Document], through: int) -> None:
    """Change-log entries up to `through` are about to be deleted (never lowered)."""
    await db[META].update_one({"_id": CHANGE_LOG}, {"$max": {"pruned": through}}, upsert=True)


@dataclass(frozen=True, slots=True)
class CatalogueState:
    """What a snapshot of `movies` is checked against, read in one query."""

    catalogue: str  # the random id of this database's catalogue
    version: int  # the data version
    hash_epoch: int
    changes_seq: int  # the last change-log sequence number given out
    changes_pruned: int  # change-log entries up to this one are gone
    swaps: int  # how many times `movies` was swapped for a staging copy
    swapping: bool  # a swap is marked (begun and not finished)


async def catalogue_state(db: AsyncDatabase[Document]) -> CatalogueState:
    """The catalogue's identity and counters (giving the catalogue its id the first time)."""
    names = [CATALOGUE, DATA_VERSION_ID, HASH_EPOCH, CHANGE_LOG, SWAP_MARKER]
    docs = {d["_id"]: d async for d in db[META].find({"_id": {"$in": names}})}
    if "id" not in docs.get(CATALOGUE, {}):
        await _upsert_catalogue(db, {"$set": {"named_at": datetime.now(UTC)}})
        docs[CATALOGUE] = await db[META].find_one({"_id": CATALOGUE}) or {}
    changes = docs.get(CHANGE_LOG, {})
    return CatalogueState(
        catalogue=str(docs[CATALOGUE]["id"]),
        version=int(docs.get(DATA_VERSION_ID, {}).get("version", 0)),
        hash_epoch=int(docs.get(HASH_EPOCH, {}).get("n", 0)),
        changes_seq=int(changes.get("seq", 0)),
        changes_pruned=int(changes.get("pruned", 0)),
        swaps=int(docs[CATALOGUE].get("swaps", 0)),
        swapping=SWAP_MARKER in docs,
    )
