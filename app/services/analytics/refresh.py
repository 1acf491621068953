"""How the engine gets its next snapshot: from the change log when it can, from the disk at
start, from a full read of the catalogue when it must.

* **Catch-up** (`catch_up`): the films of the change-log entries after the snapshot's mark
  (`app.services.change_log`) are read by id and applied (`incremental.apply_changes`).
* **Start** (`Refresher.first`): the persisted snapshot of this catalogue
  (`persist.SnapshotStore`), checked, then caught up.
* **Full read** (`full_read`): every film, when there is no usable snapshot, when the log
  cannot say what changed (entries pruned past the snapshot's mark, an entry too big to
  list, a snapshot of another history), or when more than half the catalogue changed.

A snapshot is used only when it belongs to the same catalogue (its random id in `meta`),
is not newer than the database (version, and hash epoch at an equal version), and its mark
lies within the log (not before the pruned entries, not past the last one given out).

FerretDB rewrites `movies` by swapping in a staging copy (`movies_rewrite`); a read that
overlapped a swap (the swap count in `meta` moved, or the swap marker was up) may have seen
the collection half gone, so it is not used: a full read is done again, a catch-up waits for
the next check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services import change_log
from app.services.analytics.incremental import apply_changes
from app.services.analytics.persist import SnapshotStore
from app.services.analytics.snapshot import (
    SNAPSHOT_PROJECTION,
    Lineage,
    Snapshot,
    read_catalogue,
)
from app.services.meta_repo import CatalogueState, bump_data_version, catalogue_state
from app.services.movies_repo import find_movies

log = logging.getLogger("app.analytics")

# Past this share of the catalogue changed, one full read beats reading films by id.
FULL_READ_SHARE = 0.5
FULL_READ_ATTEMPTS = 3
SWAP_WAIT_SECONDS = 1.0


class SwapInProgress(Exception):
    """`movies` was being swapped for a staging copy during the read: try again later."""


def usable(snap: Snapshot, state: CatalogueState) -> str | None:
    """Why `snap` cannot be caught up to `state` from the log (None: it can)."""
    lineage = snap.lineage
    if lineage.catalogue != state.catalogue:
        return "another catalogue"
    if snap.version > state.version:
        return f"newer (v{snap.version}) than the database (v{state.version})"
    if snap.version == state.version and lineage.hash_epoch != state.hash_epoch:
        return "same version, another hash epoch"
    if lineage.changes_seq > state.changes_seq:
        return "past the end of the change log"
    if lineage.changes_seq < state.changes_pruned:
        return "the change log was pruned past it"
    return None


def _overlapped_swap(before: CatalogueState, after: CatalogueState) -> bool:
    return before.swapping or after.swapping or before.swaps != after.swaps


async def full_read(
    db: AsyncDatabase[Document], build_id: int = 0, holes: change_log.Holes | None = None
) -> Snapshot:
    """Every film, read again if a swap of `movies` overlapped the read."""
    holes = holes or change_log.Holes()
    for _attempt in range(FULL_READ_ATTEMPTS):
        state = await catalogue_state(db)
        if state.swapping:
            await asyncio.sleep(SWAP_WAIT_SECONDS)
            continue
        # The mark: entries settled before the read are in it; the rest are read again by
        # the first catch-up (re-reading a film is harmless).
        catch = await change_log.catchup(db, state.changes_pruned, state.changes_seq, holes)
        lineage = Lineage(
            catalogue=state.catalogue,
            hash_epoch=state.hash_epoch,
            changes_seq=catch.settled_through,
            unsettled=catch.unsettled,
            source="full",
        )
        snap = await read_catalogue(db, state.version, build_id, lineage)
        if not _overlapped_swap(state, await catalogue_state(db)):
            return snap
        log.info("movies was swapped during the snapshot read: reading it again")
    raise SwapInProgress("movies kept being swapped during snapshot reads")


async def catch_up(
    db: AsyncDatabase[Document], base: Snapshot, build_id: int, holes: change_log.Holes
) -> Snapshot | None:
    """`base` brought up to date from the change log; `base` itself when nothing changed;
    None when the log cannot do it (a full read must). Raises SwapInProgress."""
    state = await catalogue_state(db)
    reason = usable(base, state)
    if reason is not None:
        log.info("snapshot v%s needs a full read: %s", base.version, reason)
        return None
    if state.swapping:
        raise SwapInProgress("movies is being swapped")
    catch = await change_log.catchup(db, base.lineage.changes_seq, state.changes_seq, holes)
    lineage = Lineage(
        catalogue=state.catalogue,
        hash_epoch=state.hash_epoch,
        changes_seq=catch.settled_through,
        unsettled=catch.unsettled,
        source="incremental",
    )
    if catch.everything:
        log.info("snapshot v%s needs a full read: a change too big to list", base.version)
        return None
    if len(catch.ids) > max(1000, FULL_READ_SHARE * base.size):
        log.info("snapshot v%s needs a full read: %d films changed", base.version, len(catch.ids))
        return None
    if not catch.ids:
        if state.version == base.version and lineage == replace(base.lineage, source="incremental"):
            return base
        # A new version without a film changed (or only the mark moved): same columns.
        return replace(base, version=state.version, build_id=build_id, lineage=lineage)
    if state.version == base.version:
        # Films under entries still in flight, or settled without a version bump (a writer
        # died after writing them). Answers and their ETags are keyed by the version, so the
        # content must not change under the same one: settled entries are reconciled by
        # bumping the version (the next check then catches up as usual); in-flight ones are
        # looked at again later, and their writer bumps the version when it finishes.
        if catch.settled_through > base.lineage.changes_seq:
            log.info("change log entries settled without a version bump: bumping it")
            await bump_data_version(db)
        return base
    started = time.perf_counter()
    docs = await find_movies(db, catch.ids, SNAPSHOT_PROJECTION)
    if _overlapped_swap(state, await catalogue_state(db)):
        raise SwapInProgress("movies was swapped during the read")
    read_s = time.perf_counter() - started
    snap = await asyncio.to_thread(
        apply_changes,
        base,
        catch.ids,
        docs,
        version=state.version,
        build_id=build_id,
        lineage=lineage,
    )
    log.info(
        "analytics snapshot v%s: %d films changed (read %.2fs, applied %.2fs), %d in all",
        snap.version,
        len(catch.ids),
        read_s,
        snap.build_seconds,
        snap.size,
    )
    return snap


class Refresher:
    """The engine's source of snapshots (one per engine: it remembers holes in the log)."""

    def __init__(self, db: AsyncDatabase[Document], store: SnapshotStore | None) -> None:
        self._db = db
        self.store = store
        self._holes = change_log.Holes()

    async def first(self, build_id: int) -> Snapshot:
        """The persisted snapshot caught up, else a full read."""
        if self.store is not None:
            state = await catalogue_state(self._db)
            loaded = await asyncio.to_thread(self.store.load, state.catalogue, build_id)
            if loaded is not None:
                log.info(
                    "persisted snapshot v%s loaded: %d films in %.2fs",
                    loaded.version,
                    loaded.size,
                    loaded.build_seconds,
                )
                try:
                    caught = await catch_up(self._db, loaded, build_id, self._holes)
                except SwapInProgress:
                    caught = None
                if caught is not None:
                    return caught
        return await full_read(self._db, build_id, self._holes)

    async def next(self, current: Snapshot | None, build_id: int) -> Snapshot:
        """The snapshot after `current` (`current` itself when nothing changed)."""
        if current is None:
            return await self.first(build_id)
        caught = await catch_up(self._db, current, build_id, self._holes)
        if caught is not None:
            return caught
        return await full_read(self._db, build_id, self._holes)
