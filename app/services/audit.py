"""The audit log: an append-only `audit` collection of who did what, when, from where, and how
it ended. The only module that reads or writes `audit`; nothing here updates or deletes.

Record an event from anywhere, in a coroutine (request handler, service, command):

    audit.record(
        db,
        action="model.activate",       # what: a dotted name, area first
        actor="bearer:alice",          # who: str(principal), or cli_actor() in a command
        outcome="success",             # "success" or "failure"
        target="revenue",              # what it was done to (a username, key id, model, file)
        source_ip="203.0.113.7",       # from where: the client address, or "cli"
        details={"version": "v3"},     # anything else worth keeping: counts, reasons
    )

`record` never blocks and never raises: it puts the entry on a short bounded queue that one
background task per database writes in batches (like a log shipper). A full queue or a failed
write drops the entry, counted in `audit_entries_dropped_total`, and logged. It returns an
awaitable that ends with True once the entry is stored (False if dropped): a request handler
ignores it; a command may await it, and `app.cli.common.run` waits for every queued entry
before the command's event loop ends anyway.

Never pass a secret (password, key, token) in any field: the log is read by admins and kept.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import re
import secrets
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client import Counter
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document, create_missing_indexes
from app.errors import InvalidQueryError

AUDIT = "audit"
Outcome = Literal["success", "failure"]
QUEUE_SIZE = 1000  # entries waiting to be written, per database; beyond, dropped
BATCH_SIZE = 100
FLUSH_SECONDS = 5.0  # how long closing waits for queued entries
MAX_PAGE = 500
# `_id`: the time to the microsecond then a random suffix, so that sorting by `_id` (the one
# sort FerretDB serves well) is newest first, and a page cursor is simply the last `_id`.
_ID_RE = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")
_INDEXES = [
    IndexModel([("action", ASCENDING), ("_id", DESCENDING)], name="action_id"),
    IndexModel([("actor", ASCENDING), ("_id", DESCENDING)], name="actor_id"),
]

log = logging.getLogger("app.audit")
WRITTEN = Counter("audit_entries_written_total", "Audit entries stored.")
DROPPED = Counter(
    "audit_entries_dropped_total",
    "Audit entries lost: the queue was full, or the database refused the write.",
    ["reason"],
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who acts and from where: `str(principal)` and the client address over HTTP,
    `cli_origin()` in a command."""

    actor: str
    source_ip: str | None
    # The user acting, when a user's token is behind `actor` (so that admins cannot lock
    # themselves out by mistake).
    username: str | None = None


def cli_origin() -> Origin:
    """A command's origin: `cli:<OS user>`, from `cli`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        user = "unknown"
    return Origin(actor=f"cli:{user}", source_ip="cli")


# --- writing -------------------------------------------------------------------------------


class _Settled:
    """An awaitable that is already over (outside an event loop, nothing can be queued)."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, bool]:
        return self.value
        yield  # makes this a generator


class AuditWriter:
    """One database's queue and the task that drains it."""

    def __init__(self, db: AsyncDatabase[Document], loop: asyncio.AbstractEventLoop) -> None:
        self.db = db  # held, so that its id is not reused while this writer lives
        self.loop = loop
        self.queue: asyncio.Queue[tuple[Document, asyncio.Future[bool]]] = asyncio.Queue(QUEUE_SIZE)
        self.indexed = False
        self.task = loop.create_task(self._run(), name="audit-writer")

    def submit(self, doc: Document) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = self.loop.create_future()
        try:
            self.queue.put_nowait((doc, done))
        except asyncio.QueueFull:
            DROPPED.labels("queue_full").inc()
            log.warning("audit queue full: entry %s dropped", doc.get("action"))
            done.set_result(False)
        return done

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < BATCH_SIZE and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stored = False
            try:
                if not self.indexed:
                    try:
                        await create_missing_indexes(self.db, AUDIT, _INDEXES)
                    finally:
                        self.indexed = True  # one try: indexes speed reads, writes need none
                await self.db[AUDIT].insert_many([doc for doc, _ in batch], ordered=False)
                stored = True
                WRITTEN.inc(len(batch))
            except PyMongoError as exc:
                DROPPED.labels("write_failed").inc(len(batch))
                log.warning("audit: %d entries not written: %s", len(batch), exc)
            finally:
                for _, done in batch:
                    if not done.done():
                        done.set_result(stored)
                    self.queue.task_done()

    async def flush(self) -> None:
        """Wait (at most `FLUSH_SECONDS`) until every queued entry is written or dropped."""
        if self.task.done():
            return
        try:
            await asyncio.wait_for(self.queue.join(), FLUSH_SECONDS)
        except TimeoutError:
            log.warning(
                "audit: %d entries still queued after %.0f s", self.queue.qsize(), FLUSH_SECONDS
            )

    async def close(self) -> None:
        await self.flush()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        while not self.queue.empty():
            _, done = self.queue.get_nowait()
            DROPPED.labels("shutdown").inc()
            if not done.done():
                done.set_result(False)


_writers: dict[int, AuditWriter] = {}


def _writer(db: AsyncDatabase[Document]) -> AuditWriter:
    loop = asyncio.get_running_loop()
    writer = _writers.get(id(db))
    if writer is None or writer.loop is not loop or writer.task.done():
        writer = _writers[id(db)] = AuditWriter(db, loop)
    return writer


def _new_id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


def record(
    db: AsyncDatabase[Document],
    *,
    action: str,
    actor: str,
    outcome: Outcome = "success",
    target: str | None = None,
    source_ip: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> asyncio.Future[bool] | _Settled:
    """Queue one audit entry (never blocks, never raises; see the module doc). `details` must
    hold plain values (str, numbers, bools, None, lists and dicts of them, datetimes)."""
    try:
        at = datetime.now(UTC)
        doc: Document = {
            "_id": _new_id(at),
            "at": at,
            "action": action,
            "actor": actor,
            "outcome": outcome,
            "target": target,
            "source_ip": source_ip,
            "details": dict(details or {}),
        }
        return _writer(db).submit(doc)
    except Exception:  # an audit entry must never fail what it records
        DROPPED.labels("error").inc()
        log.exception("audit entry %s not queued", action)
        return _Settled(False)


def record_as(
    db: AsyncDatabase[Document],
    origin: Origin,
    action: str,
    *,
    outcome: Outcome = "success",
    target: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> asyncio.Future[bool] | _Settled:
    """`record` with the actor and address of an `Origin`."""
    return record(
        db,
        action=action,
        actor=origin.actor,
        outcome=outcome,
        target=target,
        source_ip=origin.source_ip,
        details=details,
    )


async def flush(db: AsyncDatabase[Document]) -> None:
    """Wait until the entries queued for `db` so far are written (or dropped)."""
    writer = _writers.get(id(db))
    if writer is not None and writer.loop is asyncio.get_running_loop():
        await writer.flush()


async def close(db: AsyncDatabase[Document]) -> None:
    """Write what is queued for `db` and stop its writer (before its client closes)."""
    writer = _writers.pop(id(db), None)
    if writer is not None and writer.loop is asyncio.get_running_loop():
        await writer.close()


async def close_all() -> None:
    """`close` every writer of this event loop (a command's last step)."""
    loop = asyncio.get_running_loop()
    for key, writer in list(_writers.items()):
        if writer.loop is loop:
            _writers.pop(key, None)
            await writer.close()


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditQuery:
    action: str | None = None
    actor: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0
    cursor: str | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def list_entries(
    db: AsyncDatabase[Document], query: AuditQuery
) -> tuple[list[Document], str | None]:
    """A page of entries, newest first, and the cursor of the next page (None at the end).
    `since` is inclusive, `until` exclusive; page with `cursor` (or `offset`, not both)."""
    if query.cursor is not None and query.offset:
        raise InvalidQueryError("give either offset or cursor, not both")
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidQueryError(f"limit: 1-{MAX_PAGE}")
    where: dict[str, Any] = {}
    for name in ("action", "actor", "outcome"):
        value = getattr(query, name)
        if value is not None:
            where[name] = value
    at: dict[str, datetime] = {}
    if query.since is not None:
        at["$gte"] = _aware(query.since)
    if query.until is not None:
        at["$lt"] = _aware(query.until)
    if at:
        where["at"] = at
    if query.cursor is not None:
        if not _ID_RE.match(query.cursor):
            raise InvalidQueryError("cursor: invalid; use next_cursor as returned, or start over")
        where["_id"] = {"$lt": query.cursor}
    found = db[AUDIT].find(where).sort("_id", DESCENDING).skip(query.offset)
    docs = [doc async for doc in found.limit(query.limit + 1)]
    more = len(docs) > query.limit
    docs = docs[: query.limit]
    next_cursor = str(docs[-1]["_id"]) if more and docs else None
    return docs, next_cursor
