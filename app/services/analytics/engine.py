"""The engine: owns the current snapshot (refreshed in the background when the data version
changes, swapped atomically; see `refresh` for how) and the result cache keyed by
(snapshot, query). With a `SnapshotStore`, the snapshot is also persisted (`persist`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document
from app.errors import UnavailableError
from app.observability import SNAPSHOT_REBUILDS
from app.services.analytics.persist import SnapshotStore
from app.services.analytics.refresh import Refresher, SwapInProgress
from app.services.analytics.snapshot import Snapshot
from app.services.meta_repo import get_data_version

log = logging.getLogger("app.analytics")

ENGINE_KEY = "analytics"
CACHE_SIZE = 1024
CHECK_TIMEOUT_SECONDS = 1.0
# After a failed rebuild, wait this long before the next attempt (each attempt is a full scan).
REBUILD_BACKOFF_SECONDS = 30.0
# While change-log entries the snapshot read were in flight (or `movies` was being swapped),
# look again this often even if the data version stays.
RECHECK_SECONDS = 5.0
# How long shutting down may wait for the current snapshot to reach the disk (a million films:
# 2-5 s on 2 cores; a container is usually given 10 s before it is killed).
SAVE_ON_CLOSE_SECONDS = 8.0
# Aggregates run in worker threads; numpy releases the GIL in its kernels, and two slots keep
# a burst of distinct queries from starving the event loop's own thread on a small machine.
COMPUTE_SLOTS = 2


@dataclass(frozen=True, slots=True)
class Result:
    """A serialized answer and the catalogue version it describes."""

    body: bytes
    data_version: int
    cache_hit: bool
    # True while the database is failing: the answer comes from the last snapshot.
    stale: bool = False


# How an answer is serialized: JSON by default, CSV for `text/csv` (app.services.tabular).
Render = Callable[[BaseModel], bytes]
CacheKey = tuple[int, Callable[..., BaseModel], tuple[Hashable, ...], Render]


def to_json(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


class AnalyticsEngine:
    """Owns the snapshot (built in the background, swapped atomically) and the result cache.

    Requests never wait for a rebuild once a first snapshot exists: they are answered from
    the current one while the next is read. The data version is checked at most every
    `check_seconds`, with one cheap `meta` lookup.
    """

    def __init__(
        self,
        db: AsyncDatabase[Document],
        check_seconds: float = 1.0,
        cache_size: int = CACHE_SIZE,
        store: SnapshotStore | None = None,
        persist_seconds: float = 60.0,
    ) -> None:
        self._db = db
        self._refresher = Refresher(db, store)
        self._store = store
        self._persist_seconds = persist_seconds
        self._persist: asyncio.Task[None] | None = None
        self._persisted: Snapshot | None = None
        self._persisted_at = -math.inf
        self._saving = False  # a save's thread is running
        self._recheck_at = math.inf
        self._check_seconds = check_seconds
        self._cache_size = cache_size
        self._snapshot: Snapshot | None = None
        self._build: asyncio.Task[Snapshot] | None = None
        self._check: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._last_check = -math.inf
        self._check_failed = False
        self._build_failed_at = -math.inf
        self._builds = 0
        self._cache: OrderedDict[CacheKey, bytes] = OrderedDict()
        self._inflight: dict[CacheKey, asyncio.Task[bytes]] = {}
        self._slots = asyncio.Semaphore(COMPUTE_SLOTS)

    @property
    def current(self) -> Snapshot | None:
        return self._snapshot

    async def readiness(self, wait_seconds: float = 1.0) -> str:
        """`ok` once a first snapshot exists (waiting briefly for one being built): until
        then analytics and snapshot-served search would make clients wait for the scan."""
        if self._snapshot is None and self._build is not None and not self._build.done():
            # A failed build is logged by `_build_done`; here it only means "not ready".
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._build), wait_seconds)
        if self._snapshot is not None:
            return "ok"
        if self._build is not None and not self._build.done():
            return "not ready: building the first catalogue snapshot"
        return "not ready: no catalogue snapshot yet (the database must answer first)"

    def start(self) -> None:
        """Begin the first build without waiting for it (startup must not block on a scan),
        and follow the data version in the background."""
        self._ensure_build()
        if self._check_seconds > 0 and self._follower is None:
            self._follower = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """Check the data version every `check_seconds` even when no request does: an idle
        service applies writes as they land, so the first request after a burst of writes
        finds them applied instead of waiting for all of them to be read and merged (1,000
        films in a 1M catalogue: seconds)."""
        while True:
            await asyncio.sleep(self._check_seconds)
            if self._snapshot is not None:
                self._begin_check()

    def _begin_check(self) -> asyncio.Task[None] | None:
        """Start a data version check unless one ran within `check_seconds` or is running;
        the check started, if any."""
        now = time.monotonic()
        if now - self._last_check < self._check_seconds or not (
            self._check is None or self._check.done()
        ):
            return None
        self._last_check = now
        self._check = asyncio.create_task(self._check_version())
        return self._check

    async def settled(self) -> Snapshot:
        """Wait for a build in progress (if any) and return the snapshot (tests, benchmark)."""
        if self._build is not None and not self._build.done():
            await asyncio.shield(self._build)
        return await self.snapshot()

    async def close(self) -> None:
        """Stop the background work; first save the current snapshot if the file on disk is
        older (as a database checkpoints at shutdown): the next start then loads it instead
        of catching up from the change log, which at a million films costs seconds a
        thousand changed films. Bounded: a stuck save gives up after SAVE_ON_CLOSE_SECONDS."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        deadline = time.monotonic() + SAVE_ON_CLOSE_SECONDS
        pending = self._persist
        if pending is not None and not pending.done() and not self._saving:
            pending.cancel()  # waiting out `persist_seconds`: save now instead
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        snap = self._snapshot
        if (
            self._store is not None
            and snap is not None
            and snap is not self._persisted
            and snap.lineage.source != "persisted"
        ):
            if self._persist is None or self._persist.done():
                self._persist = asyncio.create_task(self._persist_after(0.0))
            # A save under way finishes (its thread cannot be stopped anyway); if it saved an
            # older snapshot, the next start catches up from the change log.
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._persist), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                log.warning("snapshot not persisted at shutdown: still saving")
        tasks = [
            t for t in (self._build, self._check, self._persist, *self._inflight.values()) if t
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ensure_build(self) -> asyncio.Task[Snapshot]:
        if self._build is None or self._build.done():
            self._builds += 1
            self._build = asyncio.create_task(self._rebuild(self._builds))
            self._build.add_done_callback(self._build_done)
        return self._build

    def _build_done(self, task: asyncio.Task[Snapshot]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._build_failed_at = time.monotonic()
            log.warning("analytics snapshot build failed: %s: %s", exc.__class__.__name__, exc)

    async def _rebuild(self, build_id: int) -> Snapshot:
        current = self._snapshot
        try:
            snap = await self._refresher.next(current, build_id)
        except SwapInProgress as exc:
            if current is None:
                raise
            log.info("snapshot refresh deferred: %s", exc)
            self._recheck_at = time.monotonic() + RECHECK_SECONDS
            return current
        self._recheck_at = (
            time.monotonic() + RECHECK_SECONDS if snap.lineage.unsettled else math.inf
        )
        if snap is current:
            return snap
        SNAPSHOT_REBUILDS.inc()
        self._snapshot = snap
        self._cache.clear()  # entries are keyed by build id; drop the old ones at once
        if snap.lineage.source != "incremental":
            log.info(
                "analytics snapshot v%s (%s): %d films in %.2fs",
                snap.version,
                snap.lineage.source,
                snap.size,
                snap.build_seconds,
            )
        self._schedule_persist(snap)
        return snap

    def _schedule_persist(self, snap: Snapshot) -> None:
        """Persist soon: at once after a full read, else at most every `persist_seconds`
        (a restart catches up from the change log anyway)."""
        if self._store is None or snap.lineage.source == "persisted":
            return
        if self._persist is not None and not self._persist.done():
            return  # the one scheduled saves whatever snapshot is current by then
        wait = 0.0
        if snap.lineage.source != "full":
            wait = max(0.0, self._persisted_at + self._persist_seconds - time.monotonic())
        self._persist = asyncio.create_task(self._persist_after(wait))

    async def _persist_after(self, wait: float) -> None:
        await asyncio.sleep(wait)
        snap, store = self._snapshot, self._store
        if snap is None or store is None or snap is self._persisted:
            return
        self._saving = True
        try:
            await asyncio.to_thread(store.save, snap)
        except OSError as exc:  # the service goes on; the next start reads the catalogue
            log.warning("snapshot not persisted: %s", exc)
        finally:
            self._saving = False
        self._persisted, self._persisted_at = snap, time.monotonic()

    async def persisted(self) -> None:
        """Wait for a pending save (tests, benchmarks)."""
        if self._persist is not None:
            await asyncio.shield(self._persist)

    async def _check_version(self) -> None:
        try:
            version = await get_data_version(self._db)
        except PyMongoError as exc:
            self._check_failed = True
            log.warning("data version check failed: %s", exc.__class__.__name__)
            return
        self._check_failed = False
        snap = self._snapshot
        now = time.monotonic()
        backing_off = now - self._build_failed_at < REBUILD_BACKOFF_SECONDS
        stale = snap is not None and (version != snap.version or now >= self._recheck_at)
        if stale and not backing_off:
            self._ensure_build()

    async def snapshot(self) -> Snapshot:
        """The snapshot to answer from: the current one, or the first one once it is built."""
        snap = self._snapshot
        if snap is None:
            try:
                return await asyncio.shield(self._ensure_build())
            except PyMongoError as exc:
                raise UnavailableError(
                    "analytics are unavailable until the database answers; retry shortly",
                    headers={"Retry-After": "5"},
                ) from exc
        check = self._begin_check()
        # Waiting makes a write visible to the next request's check; the wait is bounded, and
        # skipped while the database is failing (answers then come from the snapshot).
        if check is not None and not self._check_failed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(check), CHECK_TIMEOUT_SECONDS)
        return snap

    @property
    def stale(self) -> bool:
        """True while the database is failing (answers come from the last snapshot)."""
        return self._check_failed

    async def run(
        self,
        compute: Callable[..., BaseModel],
        *args: Hashable,
        snap: Snapshot | None = None,
        render: Render = to_json,
    ) -> Result:
        """`compute(snapshot, *args)` serialized by `render` (JSON by default), cached per
        (snapshot, compute, args, render). `snap`: answer from this snapshot (one taken with
        `snapshot()` to decide a conditional request), else from the current one.

        Concurrent identical queries share one computation, which runs in a worker thread
        and completes (and is cached) even when the client that started it goes away.
        """
        if snap is None:
            snap = await self.snapshot()
        key: CacheKey = (snap.build_id, compute, args, render)
        body = self._cache.get(key)
        if body is not None:
            self._cache.move_to_end(key)
            return Result(body, snap.version, True, self._check_failed)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._compute(key, snap, compute, args, render))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return Result(await asyncio.shield(task), snap.version, False, self._check_failed)

    async def _compute(
        self,
        key: CacheKey,
        snap: Snapshot,
        compute: Callable[..., BaseModel],
        args: tuple[Hashable, ...],
        render: Render,
    ) -> bytes:
        def work() -> bytes:
            return render(compute(snap, *args))

        async with self._slots:
            body = await asyncio.to_thread(work)
        if self._snapshot is snap:
            self._cache[key] = body
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return body
