"""The columnar snapshot: one projected read of `movies` turned into numpy columns (numbers as
float64 with NaN for unknown, categorical and multi-valued fields as integer codes), tagged
with the data version it was read at."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, get_args

import bson
import numpy as np
import pandas as pd
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.models.analytics import (
    NumericField,
)
from app.services.columnar import (
    BoolArray,
    FloatArray,
    IndexArray,
    IntArray,
    expand,
)
from app.services.filters import CatalogFilter
from app.services.meta_repo import get_data_version
from app.services.movies_repo import scan_raw_batches

log = logging.getLogger("app.analytics")

# Every numeric field the API accepts is one the schema names; all but `imdb_score` (from the
# embedded `imdb` block) are stored top-level, read as float64 columns (null -> NaN, so that
# unknown is never zero).
NUMERIC_FIELDS: tuple[str, ...] = get_args(NumericField)
DOC_NUMERIC = tuple(f for f in NUMERIC_FIELDS if f != "imdb_score")
# Only what the aggregates read: FerretDB decodes every document anyway, but the wire, the
# driver and the snapshot stay small.
SNAPSHOT_PROJECTION: dict[str, int] = {
    "_id": 0,
    "id": 1,
    "title": 1,
    "title_normalized": 1,
    "release_date": 1,
    "original_language": 1,
    "genres": 1,
    "production_companies": 1,
    "keywords": 1,  # similar films and segments (app.services.analytics.film_space)
    "cast.name": 1,
    "crew.name": 1,
    "crew.job": 1,
    "imdb.director": 1,
    "imdb.actors": 1,
    "imdb.score": 1,
    **dict.fromkeys(DOC_NUMERIC, 1),
}


@dataclass(slots=True)
class SingleDim:
    """A grouping where each film has at most one label (language, year, month...)."""

    codes: IndexArray  # -1: no label
    labels: list[Any]
    _index: dict[Any, int] | None = None

    @property
    def size(self) -> int:
        return len(self.labels)

    def code_of(self, label: Any) -> int | None:
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.labels)}
        return self._index.get(label)

    def entries(self, rows: IndexArray) -> tuple[IndexArray, IndexArray]:
        codes = self.codes[rows]
        keep = codes >= 0
        return rows[keep], codes[keep]

    def rows_having(self, labels: Iterable[Any], n_rows: int) -> BoolArray:
        wanted = [c for c in (self.code_of(x) for x in labels) if c is not None]
        if not wanted:
            return np.zeros(n_rows, dtype=bool)
        return np.isin(self.codes, wanted)


@dataclass(slots=True)
class MultiDim:
    """A grouping where a film has a list of labels (genres, companies, people), stored as
    compressed rows: the labels of row r are codes[indptr[r]:indptr[r + 1]]."""

    indptr: IntArray
    codes: IndexArray
    rows: IndexArray  # the row of every entry
    labels: list[str]
    _index: dict[str, int] | None = None

    @property
    def size(self) -> int:
        return len(self.labels)

    def code_of(self, label: str) -> int | None:
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.labels)}
        return self._index.get(label)

    def entries(self, rows: IndexArray) -> tuple[IndexArray, IndexArray]:
        """(row, label code) for every label of the given rows, in the order of `rows`."""
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        return np.repeat(rows, lens), self.codes[expand(starts, lens)]

    def rows_having(self, labels: Iterable[str], n_rows: int) -> BoolArray:
        wanted = [c for c in (self.code_of(x) for x in labels) if c is not None]
        out = np.zeros(n_rows, dtype=bool)
        if wanted:
            out[self.rows[np.isin(self.codes, wanted)]] = True
        return out


Dim = SingleDim | MultiDim
T = TypeVar("T")


@dataclass(slots=True)
class Snapshot:
    """The catalogue as columns. Read-only once built, so threads share it freely."""

    version: int
    build_id: int
    built_at: float
    build_seconds: float
    ids: IntArray
    titles: list[str]
    # For film search served from the snapshot (app.services.movies_snapshot).
    titles_normalized: list[str]
    release_dates: list[str | None]  # ISO dates, as stored
    num: dict[str, FloatArray]
    # Rows with a known value, sorted ascending by value: filtering keeps the order, which
    # makes per-query percentiles linear-time (see app.services.columnar).
    order: dict[str, IndexArray]
    language: SingleDim
    genre: MultiDim
    company: MultiDim
    director: MultiDim
    actor: MultiDim
    year: SingleDim
    decade: SingleDim
    year_month: SingleDim
    month: SingleDim
    keyword: MultiDim
    _label_rank: dict[str, IntArray] = field(default_factory=dict)
    _derived: dict[str, Any] = field(default_factory=dict)
    _derived_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def size(self) -> int:
        return int(self.ids.size)

    def mask(self, f: CatalogFilter) -> BoolArray:
        """Rows matching the filter (see `CatalogFilter` for the meaning of each field)."""
        m = np.ones(self.size, dtype=bool)
        if f.genres:
            m &= self.genre.rows_having(f.genres, self.size)
        year = self.num["release_year"]
        # Comparisons with NaN are false: films without a year drop out of year ranges.
        if f.year_from is not None:
            m &= year >= f.year_from
        if f.year_to is not None:
            m &= year <= f.year_to
        if f.language is not None:
            m &= self.language.rows_having([f.language], self.size)
        if f.company is not None:
            m &= self.company.rows_having([f.company], self.size)
        if f.min_votes is not None:
            m &= self.num["vote_count"] >= f.min_votes
        return m

    def derived(self, key: str, build: Callable[[Snapshot], T]) -> T:
        """`build(self)`, computed once per snapshot (e.g. the film feature space behind
        similar films and segments) and dropped with it: a new catalogue version rebuilds it.
        Concurrent callers wait for the one build rather than repeat it."""
        with self._derived_lock:
            if key not in self._derived:
                self._derived[key] = build(self)
            return cast(T, self._derived[key])

    def label_rank(self, name: str, dim: Dim) -> IntArray:
        """Alphabetical rank of every label (tie-breaker), computed once per snapshot."""
        rank = self._label_rank.get(name)
        if rank is None:
            order = np.argsort(np.asarray(dim.labels, dtype=object), kind="stable")
            rank = np.empty(len(dim.labels), dtype=np.int64)
            rank[order] = np.arange(len(dim.labels))
            self._label_rank[name] = rank
        return rank


def _float_column(values: list[Any]) -> FloatArray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        # A document written by another tool with a non-numeric value: treat it as unknown.
        return np.asarray([_as_float(v) for v in values], dtype=np.float64)


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def _multi(lists: list[list[str]]) -> MultiDim:
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=object, count=int(indptr[-1]))
    codes, uniques = pd.factorize(flat)
    return MultiDim(
        indptr=indptr,
        codes=np.asarray(codes, dtype=np.int32),
        rows=np.repeat(np.arange(len(lists), dtype=np.int32), lens),
        labels=[str(u) for u in uniques],
    )


def _period_dim(codes_float: FloatArray, label: Callable[[int], Any]) -> SingleDim:
    """Group films by an integer derived from their date; labels ascend with codes."""
    known = ~np.isnan(codes_float)
    if not known.any():
        return SingleDim(codes=np.full(codes_float.size, -1, dtype=np.int32), labels=[])
    values = codes_float[known].astype(np.int64)
    base = int(values.min())
    codes = np.full(codes_float.size, -1, dtype=np.int32)
    codes[known] = values - base
    return SingleDim(
        codes=codes, labels=[label(base + i) for i in range(int(values.max()) - base + 1)]
    )


class SnapshotBuilder:
    """Collects projected documents batch by batch, then turns them into a `Snapshot`."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.titles: list[str] = []
        self.titles_normalized: list[str] = []
        self.release_dates: list[str | None] = []
        self.numeric: dict[str, list[Any]] = {f: [] for f in NUMERIC_FIELDS}
        self.languages: list[str | None] = []
        self.genres: list[list[str]] = []
        self.companies: list[list[str]] = []
        self.directors: list[list[str]] = []
        self.actors: list[list[str]] = []
        self.keywords: list[list[str]] = []

    def add_raw(self, batch: bytes) -> None:
        """Decode one raw BSON batch (off the event loop) and append its documents."""
        self.add(bson.decode_all(batch))

    def add(self, docs: Iterable[Mapping[str, Any]]) -> None:
        numeric = [(f, self.numeric[f]) for f in DOC_NUMERIC]
        scores = self.numeric["imdb_score"]
        for doc in docs:
            movie_id = doc.get("id")
            if not isinstance(movie_id, int):
                continue
            self.ids.append(movie_id)
            self.titles.append(str(doc.get("title") or ""))
            self.titles_normalized.append(str(doc.get("title_normalized") or ""))
            released = doc.get("release_date")
            self.release_dates.append(released if isinstance(released, str) else None)
            for name, column in numeric:
                column.append(doc.get(name))
            imdb = doc.get("imdb") or {}
            scores.append(imdb.get("score"))
            self.languages.append(doc.get("original_language") or None)
            self.genres.append(doc.get("genres") or [])
            self.companies.append(doc.get("production_companies") or [])
            self.keywords.append(doc.get("keywords") or [])
            # People from the embedded credits and the IMDB enrichment, each name once a film.
            directors = [
                c["name"]
                for c in doc.get("crew") or ()
                if c.get("job") == "Director" and c.get("name")
            ]
            if imdb.get("director"):
                directors.append(imdb["director"])
            actors = [c["name"] for c in doc.get("cast") or () if c.get("name")]
            actors.extend(imdb.get("actors") or ())
            self.directors.append(list(dict.fromkeys(directors)))
            self.actors.append(list(dict.fromkeys(actors)))

    def finish(self, version: int, build_id: int, started: float) -> Snapshot:
        num = {f: _float_column(v) for f, v in self.numeric.items()}
        order: dict[str, IndexArray] = {}
        for name, values in num.items():
            known = np.flatnonzero(~np.isnan(values))
            order[name] = known[np.argsort(values[known], kind="stable")].astype(np.int32)
        lang_codes, lang_labels = pd.factorize(
            np.asarray(self.languages, dtype=object), use_na_sentinel=True
        )
        year, month = num["release_year"], num["release_month"]
        return Snapshot(
            version=version,
            build_id=build_id,
            built_at=time.time(),
            build_seconds=time.perf_counter() - started,
            ids=np.asarray(self.ids, dtype=np.int64),
            titles=self.titles,
            titles_normalized=self.titles_normalized,
            release_dates=self.release_dates,
            num=num,
            order=order,
            language=SingleDim(
                codes=np.asarray(lang_codes, dtype=np.int32), labels=[str(x) for x in lang_labels]
            ),
            genre=_multi(self.genres),
            company=_multi(self.companies),
            director=_multi(self.directors),
            actor=_multi(self.actors),
            year=_period_dim(year, int),
            decade=_period_dim(np.floor(year / 10), lambda d: d * 10),
            year_month=_period_dim(
                year * 12 + month - 1, lambda m: f"{m // 12:04d}-{m % 12 + 1:02d}"
            ),
            month=SingleDim(
                codes=np.where(np.isnan(month), -1, month - 1).astype(np.int32),
                labels=list(range(1, 13)),
            ),
            keyword=_multi(self.keywords),
        )


async def load_snapshot(db: AsyncDatabase[Document], build_id: int = 0) -> Snapshot:
    """Read the catalogue once, with the snapshot projection, into a `Snapshot`.

    The version is read first: a write landing during the scan makes the next version check
    see a newer version and rebuild, so the snapshot is never labelled newer than it is.
    Raw batches are decoded in a worker thread while the driver fetches the next batch.
    """
    started = time.perf_counter()
    version = await get_data_version(db)
    builder = SnapshotBuilder()
    pending: asyncio.Future[None] | None = None
    cursor = scan_raw_batches(db, SNAPSHOT_PROJECTION)
    try:
        async for batch in cursor:
            if pending is not None:
                await pending
            raw = cast(bytes, batch)  # raw batches are BSON bytes, whatever the typing says
            pending = asyncio.ensure_future(asyncio.to_thread(builder.add_raw, raw))
        if pending is not None:
            await pending
    finally:
        await cursor.close()
    return await asyncio.to_thread(builder.finish, version, build_id, started)
