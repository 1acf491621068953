"""The columnar snapshot: one projected read of `movies` turned into numpy columns (numbers as
float64 with NaN for unknown, categorical and multi-valued fields as integer codes), tagged
with the data version it was read at.

Its layout is canonical, a function of the films alone: rows ascend by film id, labels
ascend (Python's string order), so a snapshot brought up to date by an incremental refresh
(`app.services.analytics.incremental`) is array for array the one a full read would build,
and sums (which depend on the order of addition) come out bit for bit the same.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast, get_args

import bson
import numpy as np
import numpy.typing as npt
import pandas as pd
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.models.analytics import (
    NumericField,
)
from app.services.analytics.titles import TitleIndex
from app.services.columnar import (
    BoolArray,
    FloatArray,
    IndexArray,
    IntArray,
    expand,
)
from app.services.filters import CatalogFilter
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


def _code_of(labels: Sequence[Any], label: Any) -> int | None:
    """Where `label` sits in ascending `labels`, None when absent (or not comparable)."""
    try:
        i = bisect.bisect_left(labels, label)
    except TypeError:
        return None
    return i if i < len(labels) and labels[i] == label else None


@dataclass(slots=True)
class SingleDim:
    """A grouping where each film has at most one label (language, year, month...); labels
    ascend."""

    codes: IndexArray  # -1: no label
    labels: list[Any]

    @property
    def size(self) -> int:
        return len(self.labels)

    def code_of(self, label: Any) -> int | None:
        return _code_of(self.labels, label)

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
    compressed rows: the labels of row r are codes[indptr[r]:indptr[r + 1]]; labels ascend."""

    indptr: IntArray
    codes: IndexArray
    rows: IndexArray  # the row of every entry
    labels: list[str]

    @property
    def size(self) -> int:
        return len(self.labels)

    def code_of(self, label: str) -> int | None:
        return _code_of(self.labels, label)

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


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a snapshot stands in the catalogue's history, beyond its data version."""

    catalogue: str = ""  # the database's catalogue id (`meta_repo.catalogue_state`)
    hash_epoch: int = 0
    # Every change-log entry up to this one is in the snapshot (`app.services.change_log`).
    changes_seq: int = 0
    # Entries after `changes_seq` were in flight when it was read: look again soon.
    unsettled: bool = False
    source: Literal["full", "incremental", "persisted"] = "full"


@dataclass(slots=True)
class Snapshot:
    """The catalogue as columns. Read-only once built, so threads share it freely."""

    version: int
    build_id: int
    built_at: float
    build_seconds: float
    ids: IntArray  # ascending
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
    title_index: TitleIndex
    lineage: Lineage = field(default_factory=Lineage)
    # Values computed from the columns on first use (`derived`). Not init fields: a snapshot
    # made with `dataclasses.replace` (a new version) starts with none, so every derived value
    # belongs to one snapshot version.
    _derived: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _derived_lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

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
        """Alphabetical rank of every label (tie-breaker): labels ascend, so their code."""
        return np.arange(len(dim.labels), dtype=np.int64)

    def row_of(self, movie_id: int) -> int | None:
        """The row of a film, None when the snapshot lacks it."""
        i = int(np.searchsorted(self.ids, movie_id))
        return i if i < self.ids.size and int(self.ids[i]) == movie_id else None


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


def sorted_factorize(values: npt.NDArray[Any]) -> tuple[IndexArray, list[Any]]:
    """Codes into the ascending distinct values (None -> -1). pandas hashes the values, and
    Python sorts the distinct ones (faster than pandas' own sort of an object array)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    labels = list(uniques)
    order = sorted(range(len(labels)), key=labels.__getitem__)
    rank = np.empty(len(labels) + 1, dtype=np.int32)
    rank[order] = np.arange(len(labels), dtype=np.int32)
    rank[-1] = -1  # code -1 (no value) stays -1
    return rank[codes], [labels[i] for i in order]


def _multi(lists: list[list[str]]) -> MultiDim:
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=object, count=int(indptr[-1]))
    codes, uniques = sorted_factorize(flat)
    return MultiDim(
        indptr=indptr,
        codes=codes,
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
            language = doc.get("original_language")
            self.languages.append(str(language) if language else None)
            self.genres.append(_names(doc.get("genres")))
            self.companies.append(_names(doc.get("production_companies")))
            self.keywords.append(_names(doc.get("keywords")))
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
            self.directors.append(list(dict.fromkeys(map(str, directors))))
            self.actors.append(list(dict.fromkeys(map(str, actors))))

    def finish(
        self, version: int, build_id: int, started: float, lineage: Lineage | None = None
    ) -> Snapshot:
        """The snapshot of every film added, rows ascending by id (a film added twice: the
        first one counts)."""
        ids = np.asarray(self.ids, dtype=np.int64)
        perm = np.argsort(ids, kind="stable")
        ids = ids[perm]
        first = np.ones(ids.size, dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        perm, ids = perm[first], ids[first]
        take = perm.tolist()
        num = {f: _float_column(v)[perm] for f, v in self.numeric.items()}
        lang_codes, lang_labels = sorted_factorize(np.asarray(self.languages, dtype=object)[perm])
        titles_normalized = [self.titles_normalized[i] for i in take]
        return assemble(
            version=version,
            build_id=build_id,
            started=started,
            ids=ids,
            titles=[self.titles[i] for i in take],
            titles_normalized=titles_normalized,
            release_dates=[self.release_dates[i] for i in take],
            num=num,
            order={name: value_order(values) for name, values in num.items()},
            language=SingleDim(codes=lang_codes, labels=[str(x) for x in lang_labels]),
            genre=_multi([self.genres[i] for i in take]),
            company=_multi([self.companies[i] for i in take]),
            director=_multi([self.directors[i] for i in take]),
            actor=_multi([self.actors[i] for i in take]),
            keyword=_multi([self.keywords[i] for i in take]),
            title_index=TitleIndex.build(titles_normalized),
            lineage=lineage or Lineage(),
        )


def _names(value: Any) -> list[str]:
    """A stored list of names as strings (anything else: no names)."""
    if not isinstance(value, list):
        return []
    return [str(x) for x in value if x is not None]


def value_order(values: FloatArray) -> IndexArray:
    """Rows with a known value, ascending by (value, row)."""
    known = np.flatnonzero(~np.isnan(values))
    return known[np.argsort(values[known], kind="stable")].astype(np.int32)


def assemble(
    *,
    version: int,
    build_id: int,
    started: float,
    ids: IntArray,
    titles: list[str],
    titles_normalized: list[str],
    release_dates: list[str | None],
    num: dict[str, FloatArray],
    order: dict[str, IndexArray],
    language: SingleDim,
    genre: MultiDim,
    company: MultiDim,
    director: MultiDim,
    actor: MultiDim,
    keyword: MultiDim,
    title_index: TitleIndex,
    lineage: Lineage,
) -> Snapshot:
    """A snapshot from its stored columns; the date groupings are derived here."""
    year, month = num["release_year"], num["release_month"]
    return Snapshot(
        version=version,
        build_id=build_id,
        built_at=time.time(),
        build_seconds=time.perf_counter() - started,
        ids=ids,
        titles=titles,
        titles_normalized=titles_normalized,
        release_dates=release_dates,
        num=num,
        order=order,
        language=language,
        genre=genre,
        company=company,
        director=director,
        actor=actor,
        year=_period_dim(year, int),
        decade=_period_dim(np.floor(year / 10), lambda d: d * 10),
        year_month=_period_dim(year * 12 + month - 1, lambda m: f"{m // 12:04d}-{m % 12 + 1:02d}"),
        month=SingleDim(
            codes=np.where(np.isnan(month), -1, month - 1).astype(np.int32),
            labels=list(range(1, 13)),
        ),
        keyword=keyword,
        title_index=title_index,
        lineage=lineage,
    )


async def read_catalogue(
    db: AsyncDatabase[Document], version: int, build_id: int = 0, lineage: Lineage | None = None
) -> Snapshot:
    """Read every film, with the snapshot projection, into a `Snapshot` labelled `version`
    (read by the caller before the scan: a write landing during the scan makes the next
    version check see a newer version, so the snapshot is never labelled newer than it is).
    Raw batches are decoded in a worker thread while the driver fetches the next batch."""
    started = time.perf_counter()
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
    return await asyncio.to_thread(builder.finish, version, build_id, started, lineage)
