"""The audit log: an append-only `audit` collection of who did what, when, from where, and how
it ended. The only module that reads or writes `audit`; nothing here updates or deletes.

Record an event from anywhere, in a coroutine (request handler, service, command):

    audit.record(
        db,
        action="model.activate",       # what: a dotted name, area first (see ACTIONS)
        actor="user:alice",            # who: Origin.actor (`user:NAME`, `key:ID`, `admin-key`,
                                       # `cli:OS-USER`)
        outcome="success",             # "success" or "failure"
        target="revenue",              # what it was done to (a username, key id, model, file)
        source_ip="203.0.113.7",       # from where: the client address, or "cli"
        details={"version": "v3"},     # anything else worth keeping: counts, reasons
    )

or `record_as(db, origin, action, ...)` with an `Origin` (`app.security.RequestOrigin` in a
route, `cli_origin()` in a command).

**Never blocks, never raises (a choice).** `record` puts the entry on a bounded queue that one
background task per database writes in batches, like a log shipper: a login or a key check
never waits for the audit write, and an audit database error never fails what it records (a
login keeps working while `audit` cannot be written). The price: an entry can be lost. A full
queue (`QUEUE_SIZE`), a failed write or a process killed before the queue drains (normally a
few milliseconds) drops entries; every drop is counted in `audit_entries_dropped_total{reason}`
and logged at WARNING, so alert on that counter. `record` returns an awaitable that ends with
True once the entry is stored (False if dropped): a request handler ignores it; a caller that
must know (a backup job, say) awaits it. Commands and the service flush the queue before their
database client closes (`close`, `close_all`).

**No secrets.** Never pass a password, key, token or hash in any field: the log is read by
admins and kept. As a second line of defence, `details` values under secret-sounding names
(`password`, `new_password`, `secret`, `token`, `api_key`, `key_hash`, ...) are replaced by
`[redacted]`.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
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
from app.services import signed_cursor

AUDIT = "audit"
Outcome = Literal["success", "failure"]
# What is recorded (README "Audit log" lists them with their details).
ACTIONS = (
    "auth.login",
    "auth.password_change",
    "user.create",
    "user.update",
    "user.delete",
    "user.password_set",
    "user.revoke_tokens",
    "key.create",
    "key.revoke",
    "key.delete",
    "key.rotate",
    "model.activate",
    "model.rollback",
    "model.reload",
    "data.import",
    "data.ingest",
    "backup.create",
    "backup.restore",
)
QUEUE_SIZE = 1000  # entries waiting to be written, per database; beyond, dropped
BATCH_SIZE = 100
FLUSH_SECONDS = 5.0  # how long closing waits for queued entries
MAX_PAGE = 500
# `_id`: the UTC time to the microsecond then a random suffix, so that sorting by `_id` (the
# one sort FerretDB serves well) is newest first, a time range is an `_id` range, and a page
# cursor carries the last `_id`.
_ID_RE = re.compile(r"^\d{8}T\d{12}Z-[0-9a-f]{8}$")
_INDEXES = [
    IndexModel([("action", ASCENDING), ("_id", DESCENDING)], name="action_id"),
    IndexModel([("actor", ASCENDING), ("_id", DESCENDING)], name="actor_id"),
]
# `details` keys whose values are never stored (see the module doc).
_SECRET_NAME = re.compile(r"^(.*_)?(password|secret|token|key|hash)$", re.IGNORECASE)
REDACTED = "[redacted]"

log = logging.getLogger("app.audit")
WRITTEN = Counter("audit_entries_written_total", "Audit entries stored.")
DROPPED = Counter(
    "audit_entries_dropped_total",
    "Audit entries lost: the queue was full, the write failed, or the process stopped first.",
    ["reason"],
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who acts and from where: over HTTP `app.security.request_origin` makes it from the
    credential and the client address; in a command, `cli_origin()`."""

    actor: str
    source_ip: str | None
    # The user acting, when a user's token is behind `actor` (so that admins cannot lock
    # themselves out by mistake).
    username: str | None = None
    # The request's X-Request-ID: finds its access-log line.
    request_id: str | None = None


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
                    self.indexed = True  # one try: indexes speed reads, writes need none
                    try:
                        await create_missing_indexes(self.db, AUDIT, _INDEXES)
                    except PyMongoError as exc:
                        log.warning("audit: indexes not created: %s", exc.__class__.__name__)
                await self.db[AUDIT].insert_many([doc for doc, _ in batch], ordered=False)
                stored = True
                WRITTEN.inc(len(batch))
            except Exception as exc:  # the writer outlives any one batch (database, encoding)
                DROPPED.labels("write_failed").inc(len(batch))
                log.warning("audit: %d entries not written: %r", len(batch), exc)
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


def _redacted(details: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: REDACTED if _SECRET_NAME.match(k) and v is not None else v for k, v in details.items()
    }


def _new_id(at: datetime) -> str:
    return f"{_id_prefix(at)}-{secrets.token_hex(4)}"


def record(
    db: AsyncDatabase[Document],
    *,
    action: str,
    actor: str,
    outcome: Outcome = "success",
    target: str | None = None,
    source_ip: str | None = None,
    details: Mapping[str, Any] | None = None,
    request_id: str | None = None,
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
            "request_id": request_id,
            "details": _redacted(details or {}),
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
        request_id=origin.request_id,
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


async def flush_all() -> None:
    """`flush` every writer of this event loop (tests, before reading what a request wrote)."""
    loop = asyncio.get_running_loop()
    for writer in list(_writers.values()):
        if writer.loop is loop:
            await writer.flush()


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
    """Filters of a listing: exact `action`, `actor`, `outcome`; `since` inclusive, `until`
    exclusive; pages of `limit`, the next one after `cursor` (from the previous page)."""

    action: str | None = None
    actor: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None

    def fingerprint(self) -> str:
        """What a cursor is bound to: the filters (not the page size, which may change)."""
        blob = json.dumps(
            [self.action, self.actor, self.outcome, _stamp(self.since), _stamp(self.until)]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _stamp(value: datetime | None) -> str | None:
    """A time as the `_id` prefix its entries carry (UTC, to the microsecond): `_id` order is
    time order, so a time range is an `_id` range, which the `_id` index serves."""
    if value is None:
        return None
    try:
        at = _aware(value).astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999 in another zone
        at = datetime.min.replace(tzinfo=UTC) if value.year == 1 else datetime.max
    return _id_prefix(at)


def _id_prefix(at: datetime) -> str:
    # Spelled out: strftime's %Y does not pad years before 1000 on every platform.
    return (
        f"{at.year:04d}{at.month:02d}{at.day:02d}T{at.hour:02d}{at.minute:02d}{at.second:02d}"
        f"{at.microsecond:06d}Z"
    )


def _after(query: AuditQuery, keys: signed_cursor.Keys) -> str | None:
    """The last `_id` of the previous page, from a cursor this service signed for these
    filters; a 400 for any other."""
    if query.cursor is None:
        return None
    malformed = InvalidQueryError("cursor: invalid; use next_cursor as returned, or start over")
    try:
        data = signed_cursor.decode(query.cursor, keys)
    except ValueError:
        raise malformed from None
    if not isinstance(data, dict) or data.keys() != {"a", "f"}:
        raise malformed
    if data["f"] != query.fingerprint():
        raise InvalidQueryError("cursor: issued for different filters; start over")
    last = data["a"]
    if not isinstance(last, str) or not _ID_RE.match(last):
        raise malformed
    return last


async def list_entries(
    db: AsyncDatabase[Document], query: AuditQuery, cursor_keys: signed_cursor.Keys
) -> tuple[list[Document], str | None]:
    """A page of entries, newest first, and the signed cursor of the next page (None at the
    end). The first of `cursor_keys` signs it, any verifies (`Settings.cursor_keys`)."""
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidQueryError(f"limit: 1-{MAX_PAGE}")
    since, until = _stamp(query.since), _stamp(query.until)
    if since is not None and until is not None and since >= until:
        raise InvalidQueryError("since must be before until")
    where: dict[str, Any] = {}
    for name in ("action", "actor", "outcome"):
        value = getattr(query, name)
        if value is not None:
            where[name] = value
    ids: dict[str, str] = {}
    if since is not None:
        ids["$gte"] = since
    if until is not None:
        ids["$lt"] = until
    last = _after(query, cursor_keys)
    if last is not None:
        ids["$lt"] = min(last, ids.get("$lt", last))
    if ids:
        where["_id"] = ids
    found = db[AUDIT].find(where).sort("_id", DESCENDING).limit(query.limit + 1)
    docs = [doc async for doc in found]
    more = len(docs) > query.limit
    docs = docs[: query.limit]
    next_cursor = None
    if more and docs:
        signer = cursor_keys if isinstance(cursor_keys, bytes) else cursor_keys[0]
        next_cursor = signed_cursor.encode({"f": query.fingerprint(), "a": docs[-1]["_id"]}, signer)
    return docs, next_cursor
