"""The prediction log: what each model was asked and answered, for drift and live accuracy.

The only module that reads or writes `prediction_log` and `predicted_films` (one per TMDB id
that was predicted, `_id` = the id as a string, so that an incoming outcome is checked against
it cheaply; see `app.services.outcomes`).

A logged prediction: `at` (UTC), `model`, `version`, `request_id`, `principal`, `id` (the
TMDB id when the caller gave one), `inputs` (the monitored inputs as the model saw them, by
name: `app.ml.drift.MONITORED_INPUTS`) and `output` (`score`; revenue: `revenue`, `low`,
`high`; hit: `probability`, `hit`, `threshold`). `logged_films` reads them back.

They are stored as chunks: one document per write batch and model version, holding `model`,
`version`, `at` and `last_at` (its first and last prediction's times), `n`, `ids` (the TMDB ids
named, for the outcome join) and `films`, the predictions column by column as zlib-compressed
JSON. A document per prediction cost FerretDB about 90 ms of CPU per 1,000 predictions (its
cost follows the bytes it parses and indexes: a 570-byte document and four index entries per
film); a chunk of 1,000 costs it under 5 ms, so a logged 1,000-film batch no longer competes
with the next one for the machine's cores. Documents of the older per-prediction shape (no
`n`) are still read, counted and pruned.

Writes never hold up a prediction. Requests hand their logged films to `PredictionLogWriter` as
the model scored them (`PendingPredictions`: the feature rows, not yet documents); the writer's
background task, owned by the lifespan, turns them into `Slab`s, the chunk's columns, one per
model version of what arrived (reading the monitored inputs of many requests in one pass costs
a fraction of doing it per request), and writes them in batches. The buffer is bounded: a full
buffer drops new films and counts them; while the database is down the writer retries the same
batch with backoff and the buffer keeps what fits, so the log catches up after the outage. A
chunk's `_id` is its first film's, and a failed batch is retried as the same films, so a batch
retried after a lost answer is written once. Chunks whose last prediction is older than
`PREDICTION_LOG_DAYS` are deleted every hour, by one process at a time (FerretDB has no TTL
indexes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import zlib
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice, repeat
from operator import itemgetter
from typing import Any

import bson
import numpy as np
import numpy.typing as npt
import orjson
from bson import Binary, ObjectId
from bson.errors import InvalidDocument
from prometheus_client import Counter, Gauge
from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, PyMongoError

from app.db import Document, create_missing_indexes, is_ferretdb
from app.ml.drift import InputReader
from app.services import meta_repo

PREDICTION_LOG = "prediction_log"
PREDICTED_FILMS = "predicted_films"
LOG_INDEXES = [
    IndexModel([("model", ASCENDING), ("at", ASCENDING)], name="model_at"),
    IndexModel([("ids", ASCENDING)], name="ids"),
    IndexModel([("last_at", ASCENDING)], name="last_at"),
]
PRUNE_JOB = "prediction_log_prune"
# Predictions per write (and at most per chunk: about 70 kB compressed for 1,000).
BATCH_SIZE = 1000
FLUSH_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
# `predicted_films` is refreshed at most this often per id by one process.
REFRESH_IDS_SECONDS = 86_400.0
REMEMBERED_IDS = 100_000

log = logging.getLogger("app.services.prediction_log")

LOG_WRITTEN = Counter(
    "prediction_log_written_total", "Predictions written to the prediction log.", ["model"]
)
LOG_DROPPED = Counter(
    "prediction_log_dropped_total",
    "Predictions not logged: the log's buffer was full (database down or slow) or the "
    "service stopped before they were written.",
    ["model"],
)
LOG_BUFFERED = Gauge("prediction_log_buffered", "Predictions waiting in memory to be logged.")
LOG_WRITE_FAILURES = Counter(
    "prediction_log_write_failures_total", "Failed attempts to write a batch of the log."
)


@dataclass(frozen=True, slots=True)
class LogContext:
    """Who asked, in which request."""

    request_id: str | None
    principal: str | None


@dataclass(frozen=True, slots=True)
class PendingPredictions:
    """One request's logged films as the model scored them: the writer reads their monitored
    inputs from `X` (their rows of the feature matrix) and makes the documents."""

    model: str
    version: str
    context: LogContext
    at: datetime
    ids: list[int | None]
    reader: InputReader
    X: npt.NDArray[np.float64]
    records: list[dict[str, Any]]
    outputs: dict[str, list[Any]]  # column by column

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> PendingPredictions:
        return PendingPredictions(
            self.model,
            self.version,
            self.context,
            self.at,
            self.ids[:n],
            self.reader,
            self.X[:n],
            self.records[:n],
            {name: values[:n] for name, values in self.outputs.items()},
        )


def entries(
    model: str,
    version: str,
    context: LogContext,
    ids: Sequence[int | None],
    inputs: Sequence[dict[str, Any]],
    outputs: Sequence[dict[str, Any]],
    *,
    at: datetime | None = None,
) -> list[Document]:
    """The log documents of one request's logged films."""
    at = at or datetime.now(UTC)
    return [
        {
            "_id": ObjectId(),
            "at": at,
            "model": model,
            "version": version,
            "request_id": context.request_id,
            "principal": context.principal,
            "id": film_id,
            "inputs": row,
            "output": output,
        }
        for film_id, row, output in zip(ids, inputs, outputs, strict=True)
    ]


# --- chunks: how logged predictions are stored -------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _columns(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    shapes = set(map(tuple, rows))
    if len(shapes) == 1:
        # Every row with the same keys in the same order (one model's inputs or outputs):
        # transposed in C, not a Python step per cell (about 3 ms of 1,000 films' 4).
        shared = shapes.pop()
        if not shared:
            return {}
        return dict(zip(shared, map(list, zip(*map(dict.values, rows), strict=True)), strict=True))
    keys = dict.fromkeys(key for row in rows for key in row)
    return {key: [row.get(key) for row in rows] for key in keys}


def _epoch_ms(times: Sequence[datetime]) -> list[int]:
    # A request's films share one time: each distinct time converted once.
    ms = {at: (at - _EPOCH) // _MS for at in set(times)}
    return list(map(ms.__getitem__, times))


def _rows(columns: dict[str, list[Any]], n: int) -> list[dict[str, Any]]:
    if not columns:
        return [{} for _ in range(n)]
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


@dataclass(slots=True)
class Slab:
    """Consecutive logged predictions of one model version, column by column: what the
    writer's buffer holds between a request and its write. (A document per prediction, built
    and then taken apart again into the chunk's columns, cost most of the ~10 ms of the
    writer's event-loop time per 1,000 films.) `first_id` is the `_id` of the chunk this slab
    opens; it is fixed when the slab is made, so that a retried write repeats it."""

    model: str
    version: str
    first_id: ObjectId
    at: list[datetime]
    ids: list[int | None]
    request_id: list[str | None]
    principal: list[str | None]
    inputs: dict[str, list[Any]]
    output: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of_pending(cls, group: Sequence[PendingPredictions]) -> Slab:
        """Pending requests of one model version, their monitored inputs read at once."""
        first = group[0]
        films = [len(item) for item in group]
        return cls(
            first.model,
            first.version,
            ObjectId(),
            _spread([item.at for item in group], films),
            list(chain.from_iterable(item.ids for item in group)),
            _spread([item.context.request_id for item in group], films),
            _spread([item.context.principal for item in group], films),
            first.reader.columns(
                np.vstack([item.X for item in group]),
                list(chain.from_iterable(item.records for item in group)),
            ),
            _merged([item.outputs for item in group], films),
        )

    @classmethod
    def of_documents(cls, docs: Sequence[Document]) -> list[Slab]:
        """Logged predictions as `entries` makes them, one slab per run of one model version
        (each opening with its first prediction's `_id`)."""
        slabs: list[Slab] = []
        start = 0
        for end in range(1, len(docs) + 1):
            if end < len(docs) and (docs[end]["model"], docs[end]["version"]) == (
                docs[start]["model"],
                docs[start]["version"],
            ):
                continue
            run = docs[start:end]
            slabs.append(
                cls(
                    run[0]["model"],
                    run[0]["version"],
                    run[0]["_id"],
                    list(map(itemgetter("at"), run)),
                    list(map(dict.get, run, repeat("id"))),
                    list(map(dict.get, run, repeat("request_id"))),
                    list(map(dict.get, run, repeat("principal"))),
                    _columns([doc.get("inputs") or {} for doc in run]),
                    _columns([doc.get("output") or {} for doc in run]),
                )
            )
            start = end
        return slabs

    def split(self, k: int) -> tuple[Slab, Slab]:
        """The first k predictions (opening with this slab's `_id`) and the rest (a new one)."""

        def part(piece: slice, first_id: ObjectId) -> Slab:
            return Slab(
                self.model,
                self.version,
                first_id,
                self.at[piece],
                self.ids[piece],
                self.request_id[piece],
                self.principal[piece],
                {name: values[piece] for name, values in self.inputs.items()},
                {name: values[piece] for name, values in self.output.items()},
            )

        return part(slice(None, k), self.first_id), part(slice(k, None), ObjectId())

    def singles(self) -> list[Slab]:
        """One slab per prediction (the first opening with this slab's `_id`)."""
        return [
            Slab(
                self.model,
                self.version,
                self.first_id if i == 0 else ObjectId(),
                self.at[i : i + 1],
                self.ids[i : i + 1],
                self.request_id[i : i + 1],
                self.principal[i : i + 1],
                {name: values[i : i + 1] for name, values in self.inputs.items()},
                {name: values[i : i + 1] for name, values in self.output.items()},
            )
            for i in range(len(self))
        ]


def _spread(values: Sequence[Any], counts: Sequence[int]) -> list[Any]:
    """Each request's value once per film of it."""
    return list(chain.from_iterable(map(repeat, values, counts)))


def _merged(columns: Sequence[dict[str, list[Any]]], sizes: Sequence[int]) -> dict[str, list[Any]]:
    """Slabs' columns end to end; a name some slabs lack is None for their films."""
    names = dict.fromkeys(chain.from_iterable(columns))
    return {
        name: list(
            chain.from_iterable(
                part.get(name) or repeat(None, size)
                for part, size in zip(columns, sizes, strict=True)
            )
        )
        for name in names
    }


def pack(docs: Sequence[Document]) -> list[Document]:
    """Logged predictions (as `entries` makes them) as chunk documents: one per model version,
    in the order of their first prediction, each `_id` its first prediction's."""
    return pack_slabs(Slab.of_documents(docs))


def pack_slabs(slabs: Sequence[Slab]) -> list[Document]:
    """Slabs as chunk documents: one per model version, in the order of their first slab,
    each `_id` its first slab's."""
    return [doc | {"films": Binary(zlib.compress(raw, 1))} for doc, raw in _chunks(slabs)]


def _chunks(slabs: Sequence[Slab]) -> list[tuple[Document, bytes]]:
    """`pack_slabs`' documents without their `films`, and the JSON `films` compresses."""
    groups: dict[tuple[str, str], list[Slab]] = {}
    for slab in slabs:
        groups.setdefault((slab.model, slab.version), []).append(slab)
    chunks: list[tuple[Document, bytes]] = []
    for (model, version), members in groups.items():
        sizes = [len(slab) for slab in members]
        times = list(chain.from_iterable(slab.at for slab in members))
        ids = list(chain.from_iterable(slab.ids for slab in members))
        columns = {
            "at": _epoch_ms(times),
            "id": ids,
            "request_id": list(chain.from_iterable(slab.request_id for slab in members)),
            "principal": list(chain.from_iterable(slab.principal for slab in members)),
            "inputs": _merged([slab.inputs for slab in members], sizes),
            "output": _merged([slab.output for slab in members], sizes),
        }
        document = {
            "_id": members[0].first_id,
            "model": model,
            "version": version,
            "at": min(times),
            "last_at": max(times),
            "n": len(ids),
            "ids": sorted({film_id for film_id in ids if film_id is not None}),
        }
        chunks.append((document, orjson.dumps(columns)))
    return chunks


async def _packed(slabs: Sequence[Slab]) -> list[Document]:
    """`pack_slabs`, compressing in a thread: zlib gives the GIL back while it works, so the
    ~1.5 ms it takes per 1,000 films runs beside the requests instead of between them."""
    chunks = _chunks(slabs)
    compressed = await asyncio.to_thread(_compress_all, [raw for _doc, raw in chunks])
    return [
        doc | {"films": Binary(films)}
        for (doc, _raw), films in zip(chunks, compressed, strict=True)
    ]


def _compress_all(raws: list[bytes]) -> list[bytes]:
    return [zlib.compress(raw, 1) for raw in raws]


def unpack(doc: Document) -> list[Document]:
    """The logged predictions a stored document holds (a chunk, or one of the per-prediction
    documents written before chunks), each with its own `at`."""
    if "n" not in doc:
        return [doc]
    columns = orjson.loads(zlib.decompress(doc["films"]))
    n = int(doc["n"])
    inputs = _rows(columns["inputs"], n)
    outputs = _rows(columns["output"], n)
    return [
        {
            "at": _EPOCH + ms * _MS,
            "model": doc["model"],
            "version": doc["version"],
            "id": film_id,
            "request_id": request_id,
            "principal": principal,
            "inputs": film_inputs,
            "output": output,
        }
        for ms, film_id, request_id, principal, film_inputs, output in zip(
            columns["at"],
            columns["id"],
            columns["request_id"],
            columns["principal"],
            inputs,
            outputs,
            strict=True,
        )
    ]


class PredictionLogWriter:
    """The bounded buffer and the background task that writes it (see the module doc)."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        sample: float = 1.0,
        capacity: int = 20_000,
        retention_days: float = 90.0,
        batch_size: int = BATCH_SIZE,
        flush_seconds: float = FLUSH_SECONDS,
        prune_every: float = 3600.0,
    ) -> None:
        self._db = db
        self.sample = sample
        self.capacity = capacity
        self.retention = timedelta(days=retention_days)
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._prune_every = prune_every
        self._buffer: deque[Slab] = deque()
        self._films = 0  # predictions in `_buffer`
        self._pending: list[PendingPredictions] = []  # not yet slabs
        self._pending_films = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Slabs at the buffer's head in the batch being written; kept after a failed write so
        # that the retry sends the same chunks (same `_id`s), never a longer batch.
        self._taken = 0
        self._ids_seen: dict[int, float] = {}
        self._next_prune = 0.0
        self._holder = f"{socket.gethostname()} pid {os.getpid()}"
        self.written: Tally[str] = Tally()
        self.dropped: Tally[str] = Tally()
        self.failing_since: datetime | None = None
        self.last_error: str | None = None
        self.last_written_at: datetime | None = None

    # --- the request side (on the event loop; microseconds) ---------------------------------

    def choose(self, n: int) -> list[int]:
        """Which of `n` films of a request to log (all of them at sample 1, none at 0)."""
        if self.sample >= 1.0:
            return list(range(n))
        if self.sample <= 0.0:
            return []
        return [i for i in range(n) if random.random() < self.sample]

    def submit(self, docs: Sequence[Document]) -> int:
        """Queue documents for writing; what does not fit is dropped and counted."""
        room = self.capacity - self._buffered()
        accepted = docs if len(docs) <= room else docs[: max(room, 0)]
        self._buffer.extend(Slab.of_documents(accepted))
        self._films += len(accepted)
        if len(accepted) < len(docs):
            for doc in docs[len(accepted) :]:
                self.dropped[doc["model"]] += 1
                LOG_DROPPED.labels(doc["model"]).inc()
        LOG_BUFFERED.set(self._buffered())
        if self._buffered() >= self._batch_size:
            self._wake.set()
        return len(accepted)

    def _buffered(self) -> int:
        return self._films + self._pending_films

    def submit_pending(self, pending: PendingPredictions) -> int:
        """Queue a request's logged films (the request path's whole share of the work);
        what does not fit is dropped and counted."""
        room = max(self.capacity - self._buffered(), 0)
        accepted = pending if len(pending) <= room else pending.head(room)
        if len(accepted) < len(pending):
            lost = len(pending) - len(accepted)
            self.dropped[pending.model] += lost
            LOG_DROPPED.labels(pending.model).inc(lost)
        if len(accepted):
            self._pending.append(accepted)
            self._pending_films += len(accepted)
        LOG_BUFFERED.set(self._buffered())
        if self._buffered() >= self._batch_size:
            self._wake.set()
        return len(accepted)

    def _materialize(self) -> None:
        """Turn pending requests into slabs at the buffer's tail, one per model version (the
        inputs of many requests read in one pass cost a fraction of reading them per request)."""
        if not self._pending:
            return
        pending, self._pending, self._pending_films = self._pending, [], 0
        by_reader: dict[int, list[PendingPredictions]] = {}
        for item in pending:
            by_reader.setdefault(id(item.reader), []).append(item)
        for group in by_reader.values():
            try:
                slab = Slab.of_pending(group)
            except Exception:  # a bug here must not stop the writer: count the films as lost
                lost = sum(map(len, group))
                log.exception("prediction log: %d predictions could not be read", lost)
                self.dropped[group[0].model] += lost
                LOG_DROPPED.labels(group[0].model).inc(lost)
                continue
            self._buffer.append(slab)
            self._films += len(slab)

    def stats(self, model: str) -> dict[str, Any]:
        """What `GET /v1/models/{name}` shows of this process's log writer."""
        return {
            "sample": self.sample,
            "written": self.written[model],
            "dropped": self.dropped[model],
            "buffered": self._buffered(),
            "capacity": self.capacity,
            "failing_since": self.failing_since.isoformat() if self.failing_since else None,
            "last_error": self.last_error,
            "last_written_at": self.last_written_at.isoformat() if self.last_written_at else None,
        }

    # --- the background task ----------------------------------------------------------------

    async def start(self) -> None:
        with contextlib.suppress(PyMongoError):  # a database down at startup: indexes later
            await ensure_indexes(self._db)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def flush(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109
        """Wait until everything queued so far is written (tests, shutdown); False if the
        buffer is still not empty after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (self._buffer or self._pending) and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.02)
        return not (self._buffer or self._pending)

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Write what is buffered (for at most `timeout` seconds), then stop; what could not
        be written is counted as dropped."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout)
            self._task = None
        self._materialize()
        if self._buffer:
            lost: Tally[str] = Tally()
            for slab in self._buffer:
                lost[slab.model] += len(slab)
            for model, n in lost.items():
                self.dropped[model] += n
                LOG_DROPPED.labels(model).inc(n)
            log.warning("prediction log: %d predictions not written at shutdown", self._films)
            self._buffer.clear()
            self._films = 0
        LOG_BUFFERED.set(0)

    async def _run(self) -> None:
        this = asyncio.current_task()
        backoff = 0.0
        while True:
            # A cancel landing inside a driver call can be swallowed there (see the registry).
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            if self._closing and not (self._buffer or self._pending):
                return
            # Between writes the task waits out the flush interval unless a full batch is
            # ready (or a flush or shutdown asks): writing whatever arrived as soon as the
            # last write returned made batches of one film under steady traffic, an insert
            # per prediction, the log's main cost.
            full = self._buffered() >= self._batch_size
            if backoff or not (full or self._closing):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), backoff or self._flush_seconds)
            self._wake.clear()
            if await self._write_buffer():
                backoff = 0.0
            else:
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_SECONDS)
            if not self._closing:
                await self._maybe_prune()

    async def _write_buffer(self) -> bool:
        """Write the buffer batch by batch; False when the database refused (kept for later)."""
        self._materialize()
        while self._buffer:
            if not self._taken:
                self._taken = self._take()
            batch = list(islice(self._buffer, self._taken))
            try:
                try:
                    await _insert(self._db, batch)
                except (InvalidDocument, OverflowError, TypeError, ValueError):
                    # A prediction BSON cannot hold: drop it (counted), write the others. The
                    # chunks sent before the error are written again harmlessly (same `_id`s).
                    batch = self._drop_unencodable()
                    await _insert(self._db, batch)
                await self._record_ids(batch)
            except PyMongoError as exc:
                LOG_WRITE_FAILURES.inc()
                if self.failing_since is None:
                    self.failing_since = datetime.now(UTC)
                    log.warning(
                        "prediction log: writes failing (%s); buffering up to %d predictions",
                        exc.__class__.__name__,
                        self.capacity,
                    )
                self.last_error = exc.__class__.__name__
                return False
            # Only the request side appends, at the right: the batch is the buffer's head.
            for _ in range(self._taken):
                self._buffer.popleft()
            self._taken = 0
            written: Tally[str] = Tally()
            for slab in batch:
                written[slab.model] += len(slab)
            for model, n in written.items():
                self.written[model] += n
                LOG_WRITTEN.labels(model).inc(n)
            self._films -= sum(written.values())
            self.last_written_at = datetime.now(UTC)
            LOG_BUFFERED.set(self._buffered())
            if self.failing_since is not None:
                log.info("prediction log: writes work again; %d waiting", self._films)
                self.failing_since = None
        return True

    def _take(self) -> int:
        """How many slabs at the buffer's head make the next batch (at most `batch_size`
        predictions; a slab that would pass it is split where it must, in the buffer)."""
        films = taken = 0
        while taken < len(self._buffer) and films < self._batch_size:
            slab = self._buffer[taken]
            room = self._batch_size - films
            if len(slab) > room:
                slab, rest = slab.split(room)
                self._buffer[taken] = rest
                self._buffer.insert(taken, slab)
            films += len(slab)
            taken += 1
        return taken

    def _drop_unencodable(self) -> list[Slab]:
        """The batch at the buffer's head, film by film, without the predictions a chunk
        cannot hold (dropped from the buffer and counted, once)."""
        kept: list[Slab] = []
        for _ in range(self._taken):
            for one in self._buffer.popleft().singles():
                try:
                    bson.encode(pack_slabs([one])[0])
                except (InvalidDocument, OverflowError, TypeError, ValueError) as exc:
                    self._films -= 1
                    self.dropped[one.model] += 1
                    LOG_DROPPED.labels(one.model).inc()
                    log.warning(
                        "prediction log: a prediction BSON cannot hold was dropped: %s", exc
                    )
                    continue
                kept.append(one)
        self._buffer.extendleft(reversed(kept))
        self._taken = len(kept)
        return kept

    async def _record_ids(self, batch: Sequence[Slab]) -> None:
        now = time.monotonic()
        fresh = {
            int(film_id): at
            for slab in batch
            for film_id, at in zip(slab.ids, slab.at, strict=True)
            if film_id is not None
            and now - self._ids_seen.get(int(film_id), -REFRESH_IDS_SECONDS) >= REFRESH_IDS_SECONDS
        }
        if not fresh:
            return
        await mark_predicted(self._db, fresh)
        if len(self._ids_seen) > REMEMBERED_IDS:
            self._ids_seen.clear()
        self._ids_seen.update(dict.fromkeys(fresh, now))

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + self._prune_every
        try:
            if await meta_repo.claim_job(
                self._db, PRUNE_JOB, timedelta(seconds=self._prune_every), self._holder
            ):
                removed = await prune(self._db, datetime.now(UTC) - self.retention)
                if removed:
                    log.info("prediction log: %d predictions past retention deleted", removed)
        except PyMongoError as exc:
            log.warning("prediction log: pruning failed (%s)", exc.__class__.__name__)
            self._next_prune = now + 60.0


# --- the collections ----------------------------------------------------------------------


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    await create_missing_indexes(db, PREDICTION_LOG, LOG_INDEXES)


async def _insert(db: AsyncDatabase[Document], batch: list[Slab]) -> None:
    """Write a batch of logged predictions as chunks."""
    if not batch:
        return
    try:
        await db[PREDICTION_LOG].insert_many(await _packed(batch), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        # Written by an earlier attempt whose answer was lost: the same `_id`s, done.
        if not errors or any(e.get("code") != 11000 for e in errors):
            raise


async def mark_predicted(db: AsyncDatabase[Document], ids: dict[int, datetime]) -> None:
    """Remember that these TMDB ids were predicted (last at the given times).

    Most ids are new: they cost one bulk insert. Only the ids already there (predicted before
    this process's restart, or more than a day ago) are updated one by one: an upsert per id
    was the log's main cost on FerretDB, which reads before it writes each one."""
    markers = [
        {"_id": str(film_id), "id": film_id, "first_at": at, "last_at": at}
        for film_id, at in ids.items()
    ]
    try:
        await db[PREDICTED_FILMS].insert_many(markers, ordered=False)
        return
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if not errors or any(e.get("code") != 11000 for e in errors):
            raise
        present = [markers[int(e["index"])] for e in errors]
    await db[PREDICTED_FILMS].bulk_write(
        [
            UpdateOne({"_id": marker["_id"]}, {"$max": {"last_at": marker["last_at"]}})
            for marker in present
        ],
        ordered=False,
    )


async def predicted_among(db: AsyncDatabase[Document], ids: Iterable[int]) -> set[int]:
    """The ids among `ids` that some logged prediction named (within retention)."""
    wanted = {int(i) for i in ids}
    if not wanted:
        return set()
    if len(wanted) <= 20:  # `_id` equality: indexed on MongoDB, pushed down on FerretDB
        found: set[int] = set()
        for film_id in wanted:
            if await db[PREDICTED_FILMS].find_one({"_id": str(film_id)}, {"_id": 1}):
                found.add(film_id)
        return found
    # FerretDB v1 tests a large `$in` per document, slowly: there the ids are filtered here.
    query: Document = (
        {} if await is_ferretdb(db) else {"_id": {"$in": [str(i) for i in sorted(wanted)]}}
    )
    cursor = db[PREDICTED_FILMS].find(query, {"_id": 0, "id": 1})
    return {int(doc["id"]) async for doc in cursor if int(doc["id"]) in wanted}


async def prune(db: AsyncDatabase[Document], before: datetime) -> int:
    """Delete logged predictions (and predicted ids) older than `before`: chunks whose last
    prediction is, and per-prediction documents of the older shape."""
    chunks = (
        await db[PREDICTION_LOG].find({"last_at": {"$lt": before}}, {"_id": 0, "n": 1}).to_list()
    )
    await db[PREDICTION_LOG].delete_many({"last_at": {"$lt": before}})
    single = await db[PREDICTION_LOG].delete_many({"n": {"$exists": False}, "at": {"$lt": before}})
    await db[PREDICTED_FILMS].delete_many({"last_at": {"$lt": before}})
    return sum(int(doc.get("n", 0)) for doc in chunks) + int(single.deleted_count)


def _window(
    model: str, since: datetime | None, until: datetime | None, version: str | None = None
) -> Document:
    """The stored documents that may hold predictions of `model` in [since, until): a chunk
    overlapping it, or an older-shape document in it. Callers keep the predictions in it."""
    query: Document = {"model": model}
    if version is not None:
        query["version"] = version
    if until is not None:
        query["at"] = {"$lt": until}
    if since is not None:
        query["$or"] = [
            {"last_at": {"$gte": since}},
            {"n": {"$exists": False}, "at": {"$gte": since}},
        ]
    return query


def _within(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at < until)


async def logged_films(
    db: AsyncDatabase[Document],
    model: str,
    *,
    version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Document]:
    """Every logged prediction of `model` (and version) in [since, until), oldest first."""
    cursor = db[PREDICTION_LOG].find(_window(model, since, until, version), {"_id": 0})
    found = [
        film async for doc in cursor for film in unpack(doc) if _within(film["at"], since, until)
    ]
    found.sort(key=lambda film: film["at"])
    return found


async def newest_films(
    db: AsyncDatabase[Document],
    model: str,
    limit: int,
    *,
    version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Iterable[int] | None = None,
) -> list[Document]:
    """The newest `limit` logged predictions of `model` (and version, and naming one of
    `ids`) in [since, until), newest first. Chunks are read newest first until `limit`
    predictions are in hand."""
    wanted = None if ids is None else {int(i) for i in ids}
    cursor = (
        db[PREDICTION_LOG].find(_window(model, since, until, version), {"_id": 0}).sort("at", -1)
    )
    found: list[Document] = []
    async for doc in cursor:
        if wanted is not None and "n" in doc and wanted.isdisjoint(doc.get("ids") or ()):
            continue
        found += (
            film
            for film in unpack(doc)
            if _within(film["at"], since, until) and (wanted is None or film.get("id") in wanted)
        )
        if len(found) >= limit:
            break
    found.sort(key=lambda film: film["at"], reverse=True)
    return found[:limit]


async def read_inputs(
    db: AsyncDatabase[Document],
    model: str,
    version: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[Document]:
    """The newest `limit` logged predictions of a version in [since, until): inputs, score."""
    films = await newest_films(db, model, limit, version=version, since=since, until=until)
    return [
        {"inputs": film.get("inputs"), "output": {"score": (film.get("output") or {}).get("score")}}
        for film in films
    ]


async def read_identified(
    db: AsyncDatabase[Document],
    model: str,
    ids: Iterable[int],
    since: datetime | None,
    until: datetime | None,
) -> list[Document]:
    """Logged predictions of `model` in [since, until) that name one of `ids`, oldest first."""
    wanted = {int(i) for i in ids}
    if not wanted:
        return []
    query = _window(model, since, until)
    # FerretDB v1 tests a large `$in` per document, slowly; there the ids are filtered here.
    if not await is_ferretdb(db):
        named = {"$in": sorted(wanted)}
        query = {"$and": [query, {"$or": [{"ids": named}, {"n": {"$exists": False}, "id": named}]}]}
    cursor = db[PREDICTION_LOG].find(query, {"_id": 0})
    found = [
        film
        async for doc in cursor
        if "n" not in doc or not wanted.isdisjoint(doc.get("ids") or ())
        for film in unpack(doc)
        if film.get("id") in wanted and _within(film["at"], since, until)
    ]
    found.sort(key=lambda film: film["at"])
    return found


async def count(db: AsyncDatabase[Document], model: str | None = None) -> int:
    """How many predictions the log holds (of `model`)."""
    cursor = db[PREDICTION_LOG].find({"model": model} if model else {}, {"_id": 0, "n": 1})
    return sum([int(doc.get("n", 1)) async for doc in cursor])
