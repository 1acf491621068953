"""Ingest films from the TMDB API into `movies`, resumably.

Full mode lists ids through `/discover/movie`, one release-date range at a time. TMDB answers
at most 500 pages per query, so a range whose `total_pages` passes that is split in halves,
down to a single day. Films without a release date match no range: a last, best-effort pass
without a date filter picks up the films no range lists. Or full mode takes its listing from
TMDB's daily id export file (complete, undated films included), by ranges of ids.
Incremental mode lists the ids in `/movie/changes` (windows of at most 14 days, TMDB's
limit), from a given day or from where the last successful sync ended. Either way each
listed partition is then fetched film by film (`/movie/{id}` with credits and keywords),
normalized and upserted in batches.

The checkpoint is one small document in `ingest_runs`, rewritten once per batch: the stack of
partitions still to do, the one in progress with the ids already written from it, the ones
done, counts and recorded errors. A new ingest of the same kind and listing continues an
unfinished run; films are upserted by id, so redoing part of a partition never duplicates
anything.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import gzip
import json
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from app.db import INGEST_RUNS, Document
from app.models.movie import MovieDocument
from app.services.movies_store import existing_hashes, upsert_movies, write_counts
from app.services.normalize import RecordError, to_movie
from app.services.tmdb_client import JsonObject, TmdbAuthError, TmdbClient

Kind = Literal["full", "incremental"]
# Where a run's ids come from: discover by release date, TMDB's id export, `/movie/changes`.
Listing = Literal["discover", "ids-file", "changes"]
Status = Literal["running", "paused", "done", "failed"]
# Unfinished runs: `running` also covers a process that was killed before it could say so.
RESUMABLE: tuple[Status, ...] = ("running", "paused", "failed")

MAX_PAGES = 500  # TMDB refuses `page` > 500 on list endpoints
CHANGES_MAX_DAYS = 14  # TMDB refuses a `/movie/changes` window longer than this
FIRST_DAY = date(1870, 1, 1)  # the earliest release year a MovieDocument accepts
MAX_ERRORS_KEPT = 500  # the checkpoint keeps the first ones and counts the rest
UNDATED = "undated"  # the partition of the pass without a date filter
IDS_PREFIX = "ids:"  # a partition of an ids-file run: "ids:1-10000", the last "ids:N-"
# Id values per partition of an ids-file run: bounds the ids a checkpoint holds, as the
# 10,000 films of a discover range do.
IDS_PER_PARTITION = 10_000
MALFORMED_REPORTED = 20  # malformed lines of an ids file named one by one; the rest counted
T = TypeVar("T")
Range = tuple[date, date]


class NoSyncPointError(ValueError):
    """`--incremental` without `--since`, and no successful sync to continue from."""


class IdsFileError(ValueError):
    """The ids file cannot be read as a whole (missing, not gzip, truncated)."""


@dataclass
class IngestOptions:
    since: date | None = None  # set: incremental mode, changes from this day on
    until: date | None = None  # incremental window end (default: today, UTC)
    incremental: bool = False  # incremental mode; without `since`, from the last sync's end
    ids_file: Path | None = None  # full mode listed by TMDB's daily id export
    max_movies: int | None = None  # cap on film detail calls in this invocation
    batch_size: int = 100  # films per write and checkpoint: at 40 req/s, ~2.5 s of work
    max_pages: int = MAX_PAGES
    first_day: date = FIRST_DAY
    last_day: date | None = None  # default: end of the year ten years from now (announced)
    ids_per_partition: int = IDS_PER_PARTITION


@dataclass
class IdListing:
    """The films an id export lists: sorted unique ids, adult entries left out."""

    name: str
    ids: list[int]
    adult: int = 0
    malformed: list[str] = field(default_factory=list)  # the first MALFORMED_REPORTED
    malformed_total: int = 0


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_id_export(path: Path) -> IdListing:
    """Read TMDB's daily id export (`movie_ids_MM_DD_YYYY.json.gz`): one JSON object per line,
    `{"adult":false,"id":3924,"original_title":"Blondie","popularity":2.9,"video":false}`.

    A malformed line is reported with its number and skipped; blank lines are ignored. Adult
    entries are left out, as the discover listing (`include_adult=false`) leaves them out.
    Raises `IdsFileError` when the file as a whole cannot be read (e.g. a truncated gzip).
    """
    listing = IdListing(name=path.name, ids=[])
    ids: set[int] = set()

    def malformed(number: int, reason: str) -> None:
        listing.malformed_total += 1
        if len(listing.malformed) < MALFORMED_REPORTED:
            listing.malformed.append(f"{path.name} line {number}: {reason}; skipped")

    try:
        # Bytes per line: one undecodable line is one malformed line, not a failed file.
        with gzip.open(path, "rb") if _is_gzip(path) else path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError as exc:
                    malformed(number, f"not JSON ({str(exc)[:60]})")
                    continue
                movie_id = entry.get("id") if isinstance(entry, dict) else None
                if not isinstance(entry, dict):
                    malformed(number, "not a JSON object")
                elif type(movie_id) is not int or movie_id <= 0:
                    malformed(number, "no positive integer id")
                elif entry.get("adult") is True:
                    listing.adult += 1
                else:
                    ids.add(movie_id)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise IdsFileError(f"cannot read the ids file {path}: {exc}") from exc
    listing.ids = sorted(ids)
    return listing


@dataclass
class IngestProgress:
    completed: int  # films fetched in this invocation (404s included)
    total: int | None  # best estimate of films this invocation will fetch
    requests: int
    retries: int


@dataclass
class IngestSummary:
    run_id: str
    kind: Kind
    resumed: bool
    status: Status
    listing: Listing = "discover"
    since: date | None = None  # incremental runs: the first day of changes listed
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    skipped_404: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            **write_counts(self),
            "skipped_404": self.skipped_404,
            "requests": self.requests,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s),
        }


ProgressFn = Callable[[IngestProgress], None]
COUNT_KEYS = ("inserted", "updated", "unchanged", "rejected", "skipped_404", "fetched")
CLIENT_KEYS = ("requests", "retries", "throttled")


def _now() -> datetime:
    return datetime.now(UTC)


def _range_doc(rng: Range) -> str:
    """A range as stored: an ISO 8601 interval (FerretDB v1 refuses nested arrays)."""
    return f"{rng[0].isoformat()}/{rng[1].isoformat()}"


def _range(doc: str) -> Range:
    start, end = doc.split("/")
    return date.fromisoformat(start), date.fromisoformat(end)


def _split(rng: Range) -> tuple[Range, Range]:
    start, end = rng
    middle = start + timedelta(days=(end - start).days // 2)
    return (start, middle), (middle + timedelta(days=1), end)


def change_windows(since: date, until: date) -> list[Range]:
    """Consecutive windows of at most `CHANGES_MAX_DAYS` days (both ends inclusive)."""
    windows: list[Range] = []
    start = since
    while start <= until:
        end = min(until, start + timedelta(days=CHANGES_MAX_DAYS - 1))
        windows.append((start, end))
        start = end + timedelta(days=1)
    return windows


async def gather_all(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that error itself
    (the auth error when there is one), not an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        leaves = list(_leaves(failed))
        raise next((e for e in leaves if isinstance(e, TmdbAuthError)), leaves[0]) from None
    return [t.result() for t in tasks]


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _normalize(records: Sequence[JsonObject | None]) -> list[MovieDocument | str | None]:
    """Per TMDB record: the film, the reason it was rejected, or None for a 404."""
    out: list[MovieDocument | str | None] = []
    for record in records:
        if record is None:
            out.append(None)
            continue
        try:
            out.append(to_movie(record, "tmdb-api"))
        except (RecordError, ValidationError) as exc:
            out.append(_reason(exc))
    return out


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"
            for err in exc.errors()
        )
    return str(exc)


def _listing(run: Document) -> Listing:
    if run["kind"] == "incremental":
        return "changes"
    listing: Listing = run["params"].get("listing", "discover")  # older runs: discover
    return listing


async def find_resumable(
    db: AsyncDatabase[Document],
    kind: Kind,
    since: date | None = None,
    listing: Listing | None = None,
) -> Document | None:
    """The latest unfinished run of this kind (for incremental runs: of the same `since`; for
    full runs: of the same listing, so that a discover run and an ids-file run never continue
    each other)."""
    query: dict[str, Any] = {"kind": kind, "status": {"$in": list(RESUMABLE)}}
    if since is not None:
        query["params.since"] = since.isoformat()
    async for run in db[INGEST_RUNS].find(query, sort=[("started_at", -1)]):
        if listing is None or _listing(run) == listing:
            return run
    return None


def sync_point(run: Document) -> date:
    """The day an incremental sync following this finished run starts from. A full run
    reflects TMDB as of when it started; an incremental one, its window's last day. That day
    is listed again because edits made on it after the listing would otherwise be missed
    (refetching a film is harmless: upserts)."""
    if run.get("sync_point"):
        return date.fromisoformat(run["sync_point"])
    if run["kind"] == "incremental":
        return date.fromisoformat(run["params"]["until"])
    started: datetime = run["started_at"]
    return started.astimezone(UTC).date() if started.tzinfo else started.date()


async def last_sync_point(db: AsyncDatabase[Document]) -> date | None:
    """Where the last successful sync (full or incremental) ended, or None before any."""
    run = await db[INGEST_RUNS].find_one({"status": "done"}, sort=[("finished_at", -1)])
    return None if run is None else sync_point(run)


def _id_partitions(ids: list[int], width: int) -> list[str]:
    """Consecutive id ranges up to the highest id, the last one open-ended, so that a rerun
    with a newer export (holding higher ids) still lists them."""
    top = ids[-1] if ids else 1
    starts = list(range(1, top + 1, width))
    docs = [f"{IDS_PREFIX}{a}-{a + width - 1}" for a in starts[:-1]]
    return [*docs, f"{IDS_PREFIX}{starts[-1]}-"]


def _id_range(doc: str) -> tuple[int, int | None]:
    start, end = doc.removeprefix(IDS_PREFIX).split("-")
    return int(start), int(end) if end else None


def _new_run(kind: Kind, options: IngestOptions, listing: IdListing | None) -> Document:
    today = _now().date()
    estimated: int | None = None
    if kind == "incremental":
        assert options.since is not None
        until = options.until or today
        if options.since > until:
            raise ValueError(f"--since {options.since} is after {until}")
        params: dict[str, Any] = {"since": options.since.isoformat(), "until": until.isoformat()}
        todo = [_range_doc(w) for w in reversed(change_windows(options.since, until))]
    elif listing is not None:
        params = {"listing": "ids-file", "ids_file": listing.name}
        todo = list(reversed(_id_partitions(listing.ids, options.ids_per_partition)))
        estimated = len(listing.ids)
    else:
        last = options.last_day or date(today.year + 10, 12, 31)
        params = {
            "listing": "discover",
            "first_day": options.first_day.isoformat(),
            "last_day": last.isoformat(),
        }
        # A stack: the date ranges first, then the pass for the films they cannot list.
        todo = [UNDATED, _range_doc((options.first_day, last))]
    started = _now()
    return {
        "_id": f"{kind}-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        "kind": kind,
        "status": "running",
        "params": {**params, "max_pages": options.max_pages},
        "todo": todo,  # a stack: the last partition is the next one
        "current": None,  # {"range": partition, "written": [ids]}
        "partitions_done": [],
        "estimated_total": estimated,
        "counts": dict.fromkeys((*COUNT_KEYS, *CLIENT_KEYS), 0),
        "errors": [],
        "errors_total": 0,
        "warnings": [],
        "invocations": 0,
        "last_error": None,
        "started_at": started,
        "updated_at": started,
        "finished_at": None,
    }


class _Ingest:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        client: TmdbClient,
        run: Document,
        options: IngestOptions,
        summary: IngestSummary,
        progress: ProgressFn | None,
        listing: IdListing | None = None,
    ) -> None:
        self.db = db
        self.listing = listing
        self.client = client
        self.run = run
        self.options = options
        self.summary = summary
        self.progress = progress
        self.kind: Kind = run["kind"]
        self.max_pages = int(run["params"].get("max_pages", MAX_PAGES))
        self.known: dict[int, str | None] = {}
        self.fetched = 0  # this invocation
        self.fetched_before = int(run["counts"]["fetched"])
        self.pending = 0  # listed ids of the current range not fetched yet
        self.client_seen = {k: getattr(client.stats, k) for k in CLIENT_KEYS}

    # --- checkpoint -----------------------------------------------------------------------

    def _absorb_client_stats(self) -> None:
        for key in CLIENT_KEYS:
            now = getattr(self.client.stats, key)
            delta = now - self.client_seen[key]
            self.client_seen[key] = now
            self.run["counts"][key] += delta
            setattr(self.summary, key, getattr(self.summary, key) + delta)

    async def save(self) -> None:
        self._absorb_client_stats()
        self.run["updated_at"] = _now()
        fields = {k: v for k, v in self.run.items() if k != "_id"}
        await self.db[INGEST_RUNS].update_one({"_id": self.run["_id"]}, {"$set": fields})

    def _record(self, movie_id: int, kind: str, reason: str) -> None:
        entry = {"id": movie_id, "kind": kind, "reason": reason}
        self.run["errors_total"] += 1
        if len(self.run["errors"]) < MAX_ERRORS_KEPT:
            self.run["errors"].append(entry)
        if len(self.summary.errors) < MAX_ERRORS_KEPT:
            self.summary.errors.append(entry)

    def _warn(self, message: str) -> None:
        if message not in self.run["warnings"]:
            self.run["warnings"].append(message)
        self.summary.warnings.append(message)

    def _report(self) -> None:
        if self.progress is None:
            return
        self._absorb_client_stats()
        total = self.fetched + self.pending
        estimate = self.run.get("estimated_total")
        if estimate:
            total = max(total, estimate - self.fetched_before)
        if self.options.max_movies is not None:
            total = min(total, self.options.max_movies)
        self.progress(
            IngestProgress(
                completed=self.fetched,
                total=total or None,
                requests=self.summary.requests,
                retries=self.summary.retries,
            )
        )

    # --- listing --------------------------------------------------------------------------

    async def _page(self, rng: Range, page: int) -> JsonObject:
        if self.kind == "incremental":
            return await self.client.changes(rng[0], rng[1], page)
        params = {
            "primary_release_date.gte": rng[0].isoformat(),
            "primary_release_date.lte": rng[1].isoformat(),
            "sort_by": "primary_release_date.asc",
            "include_adult": "false",
            "include_video": "false",
        }
        return await self.client.discover(params, page)

    @staticmethod
    def _ids(page: JsonObject) -> list[int]:
        results = page.get("results")
        if not isinstance(results, list):
            return []
        # `/movie/changes` lists adult titles too; discover leaves them out by default.
        return [
            int(r["id"])
            for r in results
            if isinstance(r, dict) and isinstance(r.get("id"), int) and not r.get("adult")
        ]

    async def _list(self, partition: str) -> list[int] | None:
        """The ids of the partition on top of the stack (None: it was split instead)."""
        if partition == UNDATED:
            return await self._list_undated()
        if partition.startswith(IDS_PREFIX):
            return self._list_ids(partition)
        return await self._list_range(_range(partition))

    async def _list_range(self, rng: Range) -> list[int] | None:
        """The ids in the range on top of the stack, or None after replacing it by its
        halves. The range stays on the stack until listed, so a failure here loses nothing."""
        first = await self._page(rng, 1)
        pages = int(first.get("total_pages") or 0)
        if self.run["estimated_total"] is None and self.kind == "full":
            # The first probe spans the whole catalogue: its count sizes the progress bar.
            self.run["estimated_total"] = int(first.get("total_results") or 0)
        if pages > self.max_pages:
            if rng[0] < rng[1]:
                left, right = _split(rng)
                # Replace the range (still on top of the stack) by its halves, left on top.
                self.run["todo"][-1:] = [_range_doc(right), _range_doc(left)]
                return None
            self._warn(
                f"{rng[0]}: {pages} pages ({first.get('total_results')} films) in a single day;"
                f" TMDB serves only the first {self.max_pages} pages, the rest were not listed"
            )
            pages = self.max_pages
        rest = await gather_all([self._page(rng, p) for p in range(2, pages + 1)])
        return list(dict.fromkeys(i for page in (first, *rest) for i in self._ids(page)))

    async def _list_undated(self) -> list[int]:
        """Best effort: the films no date range lists (no release date, or one outside the
        ranges), from `/discover/movie` without a date filter. Such films sit together at one
        end of a release-date order (TMDB does not document which), so each order is walked
        from its start until a page holds none of them; films with a date in the ranges were
        listed and fetched there, and are not fetched again. Past TMDB's 500-page cap only
        the id export (`--ids-file`) lists them."""
        params = self.run["params"]
        first_day, last_day = params["first_day"], params["last_day"]
        found: dict[int, None] = {}
        for order in ("primary_release_date.asc", "primary_release_date.desc"):
            query = {"sort_by": order, "include_adult": "false", "include_video": "false"}
            page = 1
            while True:
                answer = await self.client.discover(query, page)
                total = int(answer.get("total_pages") or 0)
                results = answer.get("results")
                unlisted = [
                    r["id"]
                    for r in (results if isinstance(results, list) else [])
                    if isinstance(r, dict)
                    and isinstance(r.get("id"), int)
                    and not r.get("adult")
                    and not first_day <= str(r.get("release_date") or "")[:10] <= last_day
                ]
                found.update(dict.fromkeys(unlisted))
                if not unlisted or page >= min(total, self.max_pages):
                    break
                page += 1
            if unlisted and total > self.max_pages and page >= self.max_pages:
                self._warn(
                    f"films without a release date: {order} still lists them on page"
                    f" {self.max_pages}, the last TMDB serves; more may exist, which only"
                    " a full sync with --ids-file (TMDB's daily id export) reaches"
                )
        return list(found)

    def _list_ids(self, partition: str) -> list[int]:
        assert self.listing is not None  # an ids-file run is only continued with its file
        start, end = _id_range(partition)
        ids = self.listing.ids
        low = bisect.bisect_left(ids, start)
        high = len(ids) if end is None else bisect.bisect_right(ids, end)
        return ids[low:high]

    # --- fetching -------------------------------------------------------------------------

    async def _write(self, ids: list[int], records: list[JsonObject | None]) -> None:
        """Normalize and upsert fetched films, then checkpoint them as written."""
        # Validation is CPU work (~0.1 ms a film): off the event loop, so that the fetchers
        # keep their pace while it runs.
        outcomes = await asyncio.to_thread(_normalize, records)
        movies: list[MovieDocument] = []
        for movie_id, outcome in zip(ids, outcomes, strict=True):
            if outcome is None:
                self.summary.skipped_404 += 1
                self.run["counts"]["skipped_404"] += 1
                self._record(movie_id, "skipped_404", "TMDB answered 404 for /movie/{id}")
            elif isinstance(outcome, str):
                self.summary.rejected += 1
                self.run["counts"]["rejected"] += 1
                self._record(movie_id, "rejected", outcome)
            else:
                movies.append(outcome)
        written = await upsert_movies(self.db, movies, self.known)
        for key in ("inserted", "updated", "unchanged"):
            setattr(self.summary, key, getattr(self.summary, key) + getattr(written, key))
            self.run["counts"][key] += getattr(written, key)
        self.fetched += len(ids)
        self.pending -= len(ids)
        self.run["counts"]["fetched"] += len(ids)
        self.run["current"]["written"].extend(ids)
        await self.save()

    async def _fetch_and_write(self, batches: list[list[int]]) -> None:
        """Fetch the films of `batches` while writing the ones already fetched.

        Fetching used to stop while each batch was written and checkpointed, and the write
        began only once the batch's slowest request (a 503 backed off) was back: half of the
        rate TMDB allows went unused. Here the films of a batch are fetched by a stream of
        requests (at most `concurrency` in flight, paced by the client), and the writer
        takes them in listing order as they come, at least a quarter of a batch at a time,
        checkpointing after each write: while it writes, fetching goes on. Only the last few
        films of a batch are written after its fetching ends.

        Fetching does not run into the next batch before this one is written, checkpointed
        and reported, so an interruption loses at most the batch in flight, as before, and a
        stop at a batch's end (`--max-movies`, a crash after its checkpoint) none.
        """
        client_slots = max(1, self.client.concurrency)
        fewest = max(1, (self.options.batch_size + 3) // 4)
        fetched: dict[int, JsonObject | None] = {}  # by position in its batch
        arrived = asyncio.Event()

        async def fetch(position: int, movie_id: int) -> None:
            fetched[position] = await self.client.movie_details(movie_id)
            arrived.set()

        async def fetch_batch(batch: list[int]) -> None:
            # A bounded stream rather than a task per film: the client holds at most
            # `concurrency` requests anyway, and fewer waiting tasks keep the loop light.
            queue = iter(enumerate(batch))

            async def worker() -> None:
                for position, movie_id in queue:
                    await fetch(position, movie_id)

            async with asyncio.TaskGroup() as group:
                for _ in range(min(client_slots, len(batch))):
                    group.create_task(worker())

        async def write_batch(batch: list[int]) -> None:
            position = 0
            while position < len(batch):
                least = min(len(batch), position + fewest)
                while not all(p in fetched for p in range(position, least)):
                    arrived.clear()  # no await since the check: nothing is missed
                    await arrived.wait()
                stop = least
                while stop < len(batch) and stop in fetched:
                    stop += 1  # and whatever else has arrived in order
                records = [fetched.pop(p) for p in range(position, stop)]
                await self._write(batch[position:stop], records)
                position = stop
            self._report()

        try:
            for batch in batches:
                async with asyncio.TaskGroup() as group:
                    group.create_task(fetch_batch(batch))
                    await write_batch(batch)
        except BaseExceptionGroup as failed:
            leaves = list(_leaves(failed))
            raise next((e for e in leaves if isinstance(e, TmdbAuthError)), leaves[0]) from None

    def _batches(self, remaining: list[int]) -> tuple[list[list[int]], bool]:
        """The partition's batches this invocation may fetch, and whether `--max-movies`
        stops it inside the partition."""
        batches: list[list[int]] = []
        room = self._room()
        for start in range(0, len(remaining), self.options.batch_size):
            batch = remaining[start : start + self.options.batch_size]
            if room is not None and room < len(batch):
                if room > 0:
                    batches.append(batch[:room])
                return batches, True
            batches.append(batch)
            room = None if room is None else room - len(batch)
        return batches, False

    def _room(self) -> int | None:
        cap = self.options.max_movies
        return None if cap is None else cap - self.fetched

    async def execute(self) -> None:
        if self.listing is not None:
            for message in self.listing.malformed:
                self._warn(message)
            more = self.listing.malformed_total - len(self.listing.malformed)
            if more:
                self._warn(f"{self.listing.name}: {more} more malformed lines skipped")
        self.known = await existing_hashes(self.db)
        todo: list[str] = self.run["todo"]
        current = self.run["current"]
        if current is not None and (not todo or todo[-1] != current["range"]):
            todo.append(current["range"])  # the range a previous invocation was inside
        await self.save()
        while todo:
            room = self._room()
            if room is not None and room <= 0:
                self.run["status"] = "paused"
                return
            rng_doc = todo[-1]
            ids = await self._list(rng_doc)
            if ids is None:
                continue
            todo.pop()
            if current is None or current["range"] != rng_doc:
                current = {"range": rng_doc, "written": []}
            self.run["current"] = current
            done = set(current["written"])
            remaining = [i for i in ids if i not in done]
            self.pending = len(remaining)
            self._report()
            batches, stopped = self._batches(remaining)
            await self._fetch_and_write(batches)
            if stopped:
                self.run["status"] = "paused"
                return
            self.run["partitions_done"].append(rng_doc)
            self.run["current"] = current = None
            self.pending = 0
            await self.save()
        self.run["status"] = "done"
        self.run["finished_at"] = _now()
        self.run["sync_point"] = sync_point(self.run).isoformat()


async def ingest_tmdb(
    db: AsyncDatabase[Document],
    client: TmdbClient,
    options: IngestOptions | None = None,
    progress: ProgressFn | None = None,
) -> IngestSummary:
    """Ingest (or continue ingesting) films; returns this invocation's summary.

    Raises `NoSyncPointError` for an incremental sync without `since` before any successful
    sync, `IdsFileError` for an unreadable ids file, `TmdbAuthError` when the token is refused
    and `TmdbError` when TMDB keeps failing; the run is then marked `failed` and the next
    ingest continues it.
    """
    options = options or IngestOptions()
    incremental = options.incremental or options.since is not None
    if incremental and options.ids_file is not None:
        raise ValueError("--ids-file lists a full sync; it does not go with --incremental/--since")
    if incremental and options.since is None:
        since = await last_sync_point(db)
        if since is None:
            raise NoSyncPointError(
                "no successful TMDB sync yet to continue from: run a full sync first "
                "(`tmdb-analytics ingest tmdb`, or `--ids-file`) or pass --since YYYY-MM-DD"
            )
        options = dataclasses.replace(options, since=since)
    kind: Kind = "incremental" if incremental else "full"
    listing: Listing = (
        "changes" if incremental else "ids-file" if options.ids_file is not None else "discover"
    )
    ids = None
    if options.ids_file is not None:
        # ~1M lines: parsed off the event loop, before any run is touched.
        ids = await asyncio.to_thread(read_id_export, options.ids_file)
    started = time.monotonic()
    run = await find_resumable(db, kind, options.since, listing)
    resumed = run is not None
    if run is None:
        run = _new_run(kind, options, ids)
        await db[INGEST_RUNS].insert_one(run)
    elif ids is not None:
        run["params"]["ids_file"] = ids.name  # the latest export read for this run
    run.update(status="running", last_error=None, invocations=run["invocations"] + 1)
    summary = IngestSummary(
        run_id=run["_id"],
        kind=kind,
        resumed=resumed,
        status="running",
        listing=listing,
        since=options.since if incremental else None,
    )
    ingest = _Ingest(db, client, run, options, summary, progress, ids)
    try:
        await ingest.execute()
    except (Exception, asyncio.CancelledError) as exc:
        run["status"] = "failed"
        run["last_error"] = "interrupted" if isinstance(exc, asyncio.CancelledError) else str(exc)
        # The checkpoint itself is as of the last whole batch; this only records the status.
        # The database may be what failed: then the original error says more.
        with contextlib.suppress(Exception):
            await ingest.save()
        raise
    await ingest.save()
    summary.status = run["status"]
    summary.elapsed_s = time.monotonic() - started
    return summary
