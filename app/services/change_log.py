"""The films change log (`movies_changes`): which films every write changed, so that the
analytics snapshot re-reads just those films instead of the whole catalogue. The only module
that reads or writes the collection.

Neither FerretDB nor MongoDB outside a replica-set transaction writes two documents
atomically, so the log is written *ahead* of the change, and settled after it:

1. `begin`: a sequence number from `meta` (`change_log.seq`, `$inc`), then the entry
   `{_id: seq, ids, at, done: false}`, before any film is written;
2. the films are written (inserted, updated, deleted, or the collection rewritten);
3. `finish`: the entry is marked `done`, then the writer bumps the data version.

A reader (`app.services.analytics.refresh`) re-reads the films of every entry after the
last one its snapshot holds, done or not, and moves its mark (`changes_seq`) only over
*settled* entries: done ones, and pending ones older than `STALE_SECONDS` (a writer that
died between 1 and 3; whatever it wrote is in the films the reader has just re-read). A
pending entry is read again on the next refresh, so a film is never left at a state read
while its write was in flight. What a crash leaves:

* between 1 and 2 (or between the `$inc` and the insert: a hole in the sequence): nothing was
  written; the entry or hole settles after `STALE_SECONDS` and costs a few lookups;
* during 2, or between 2 and 3: the entry stays pending, so readers keep re-reading its films
  until it settles, and the films' final state is in the snapshot;
* after 3 but before the version bump: the next version change (any write) brings it in.

A writer that took longer than `STALE_SECONDS / 2` (readers may have settled its entry
already) logs its films again when it finishes, as a new entry, so nothing it wrote late is
lost. Entries older than `KEEP_SECONDS` are pruned now and then; a snapshot whose mark lies
before the pruned ones is rebuilt from a full read (`change_log.pruned` in `meta`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document
from app.services import meta_repo

log = logging.getLogger("app.movies_store")  # one logger for every write of films

MOVIES_CHANGES = "movies_changes"
# A pending entry (or a hole in the sequence) this old belongs to a writer that died.
STALE_SECONDS = 600.0
# Entries are kept this long: a snapshot persisted up to a week ago still catches up from
# the log; an older one is rebuilt from a full read.
KEEP_SECONDS = 7 * 86_400.0
PRUNE_EVERY = 200  # one writer in this many prunes the log
# Past this many films an entry says "everything" instead (readers do a full read): an
# entry must stay well under MongoDB's 16 MB document limit.
MAX_LOGGED_IDS = 200_000
# Readers fetch up to this many entries one by one (an `_id` lookup, indexed on MongoDB and
# on the patched FerretDB); more than that in one range query.
LOOKUP_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    ids: tuple[int, ...]
    everything: bool  # too many films to list: read them all
    at: datetime
    done: bool

    def settled(self, now: datetime) -> bool:
        return self.done or now - self.at > timedelta(seconds=STALE_SECONDS)


def _entry(doc: Document) -> Entry:
    at = doc.get("at")
    return Entry(
        seq=int(doc["_id"]),
        ids=tuple(int(i) for i in doc.get("ids") or ()),
        everything=bool(doc.get("all")),
        at=at if isinstance(at, datetime) else datetime.now(UTC),
        done=bool(doc.get("done")),
    )


# --- writers --------------------------------------------------------------------------------


@dataclass(slots=True)
class Ticket:
    seq: int
    ids: list[int]
    started: float  # time.monotonic() at `begin`


async def _insert(db: AsyncDatabase[Document], ids: list[int], *, done: bool) -> int:
    seq = await meta_repo.next_change_seq(db)
    entry: Document = {"_id": seq, "at": datetime.now(UTC), "done": done, "n": len(ids)}
    if len(ids) > MAX_LOGGED_IDS:
        entry["all"] = True
    else:
        entry["ids"] = ids
    await db[MOVIES_CHANGES].insert_one(entry)
    return seq


async def begin(db: AsyncDatabase[Document], ids: Iterable[int]) -> Ticket:
    """Log that the films `ids` are about to change (before writing any of them)."""
    listed = sorted(set(ids))
    ticket = Ticket(await _insert(db, listed, done=False), listed, time.monotonic())
    if ticket.seq % PRUNE_EVERY == 0:
        try:
            await prune(db)
        except PyMongoError as exc:  # pruning is housekeeping: the write goes on
            log.warning("change log not pruned: %s", exc.__class__.__name__)
    return ticket


async def finish(db: AsyncDatabase[Document], ticket: Ticket) -> None:
    """Mark the entry done (the films are written). A write slow enough that readers may have
    settled its entry meanwhile logs its films again, as a new, done entry."""
    await db[MOVIES_CHANGES].update_one({"_id": ticket.seq}, {"$set": {"done": True}})
    if time.monotonic() - ticket.started > STALE_SECONDS / 2:
        await _insert(db, ticket.ids, done=True)


@asynccontextmanager
async def recorded(db: AsyncDatabase[Document], ids: Iterable[int]) -> AsyncIterator[None]:
    """Log the films `ids` before the body writes them, and mark the entry done after it,
    even when it fails part-way (what it wrote is then re-read by the snapshot)."""
    ticket = await begin(db, ids)
    try:
        yield
    finally:
        try:
            await finish(db, ticket)
        except PyMongoError as exc:  # the entry stays pending: readers settle it later
            log.warning("change log entry %d not marked done: %s", ticket.seq, exc)


async def prune(db: AsyncDatabase[Document], keep_seconds: float = KEEP_SECONDS) -> int:
    """Delete the oldest entries: every one up to the last of an unbroken run of settled
    entries older than `keep_seconds`. The pruned mark is raised first, so a reader that
    misses an entry always knows it was pruned. Returns the new mark (0: nothing pruned)."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=keep_seconds)
    through = 0
    async for doc in db[MOVIES_CHANGES].find({}, {"_id": 1, "at": 1, "done": 1}).sort("_id", 1):
        entry = _entry(doc)
        if entry.at >= cutoff or not entry.settled(now):
            break
        through = entry.seq
    if through:
        await meta_repo.set_changes_pruned(db, through)
        await db[MOVIES_CHANGES].delete_many({"_id": {"$lte": through}})
    return through


# --- readers --------------------------------------------------------------------------------


async def entries_between(db: AsyncDatabase[Document], after: int, upto: int) -> list[Entry]:
    """The entries with `after` < seq <= `upto` that exist, ascending (holes: see `Holes`)."""
    if upto <= after:
        return []
    if upto - after <= LOOKUP_LIMIT:
        docs = [await db[MOVIES_CHANGES].find_one({"_id": s}) for s in range(after + 1, upto + 1)]
        found = [d for d in docs if d is not None]
    else:
        query = {"_id": {"$gt": after, "$lte": upto}}
        found = await db[MOVIES_CHANGES].find(query).to_list()
    return sorted((_entry(d) for d in found), key=lambda e: e.seq)


class Holes:
    """When each missing sequence number was first seen missing (per process): a number
    given out but never written is a writer that died before logging, settled after
    `STALE_SECONDS` like a pending entry."""

    def __init__(self) -> None:
        self._first_seen: dict[int, float] = {}

    def settled(self, seq: int) -> bool:
        first = self._first_seen.setdefault(seq, time.monotonic())
        return time.monotonic() - first > STALE_SECONDS


@dataclass(frozen=True, slots=True)
class Catchup:
    """What a snapshot at mark `after` must re-read to reach mark `upto`."""

    ids: frozenset[int]  # films changed by the entries read (settled or not)
    everything: bool  # an entry too big to list: read the whole catalogue
    settled_through: int  # every entry up to here is settled: the snapshot's new mark
    unsettled: bool  # entries after the new mark are still in flight: look again later


async def catchup(db: AsyncDatabase[Document], after: int, upto: int, holes: Holes) -> Catchup:
    """The films to re-read and the new mark, from the entries in (`after`, `upto`]."""
    entries = await entries_between(db, after, upto)
    by_seq = {e.seq: e for e in entries}
    now = datetime.now(UTC)
    mark = after
    for seq in range(after + 1, upto + 1):
        entry = by_seq.get(seq)
        if not (entry.settled(now) if entry is not None else holes.settled(seq)):
            break
        mark = seq
    ids: set[int] = set()
    for entry in entries:
        ids.update(entry.ids)
    return Catchup(
        ids=frozenset(ids),
        everything=any(e.everything for e in entries),
        settled_through=mark,
        unsettled=mark < upto,
    )
