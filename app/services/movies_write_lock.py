"""The films write lock: exclusive right to write `movies`, shared by every process on the
database, as a lease in `meta` that its holder keeps alive (`meta_repo` stores it).

On FerretDB every write to `movies` runs under it: a bulk update there rewrites the whole
collection into a staging copy and swaps it in (`movies_rewrite`), and a write landing in
`movies` during the copy would vanish with the swap."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document, is_ferretdb
from app.services import meta_repo

log = logging.getLogger("app.movies_store")  # one logger for every write of films

# The holder refreshes its lease every quarter of it. A holder that is killed (or loses the
# database) stops refreshing, so its lock expires at most LOCK_LEASE after the last refresh
# and the next writer deletes it (`until` < now) and goes on: nothing needs cleaning by hand.
LOCK_LEASE = timedelta(seconds=60)
LOCK_POLL_SECONDS = 0.25
# The owner of the lock this task holds ("" when it was skipped on MongoDB), None when none.
_HOLDER: ContextVar[str | None] = ContextVar("movies_write_lock_holder", default=None)


class LockLostError(RuntimeError):
    """The write lock expired or was taken over while its holder was still writing."""


def lock_owner() -> str | None:
    """The owner of the lock this task holds ("" when it was skipped on MongoDB), else None."""
    return _HOLDER.get()


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
    public functions take it and call `*_locked` ones that expect it held."""
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
            await meta_repo.release_lock(db, owner)
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
        if not await meta_repo.take_lock(db, owner, now, now + LOCK_LEASE):
            if started is None:
                started = time.monotonic()
                holder = await meta_repo.lock_holder(db)
                log.info("waiting for another writer of films (lock held by %s)", holder or "?")
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
            extended = await meta_repo.extend_lock(db, owner, until)
        except PyMongoError as exc:  # the holder's own work fails too and releases it
            log.warning("films write lock not refreshed: %s", exc.__class__.__name__)
            continue
        if not extended:
            log.warning("films write lock lost (held past its lease)")
            return
