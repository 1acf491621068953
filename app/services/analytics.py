"""The analytics engine: a columnar snapshot of `movies` held in memory, rebuilt when the data
version changes, and every aggregate computed from it with results cached per (snapshot,
normalized query).

Why a snapshot: FerretDB's pipeline has no medians, percentiles, histograms or correlations,
and scans at ~0.3 ms per document, so every aggregate there would cost a full scan; MongoDB
could do more, but then answers would differ by backend. One read per data version, with a
projection, turns the catalogue into numpy columns that answer any filter in milliseconds.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import itertools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import bson
import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import MOVIES, Document, get_data_version
from app.errors import InvalidQueryError, UnavailableError
from app.models.analytics import (
    AppliedFilters,
    CompaniesResponse,
    CompanyItem,
    CorrelationsResponse,
    Coverage,
    Distinct,
    DistributionResponse,
    GenreItem,
    GenresResponse,
    GroupSort,
    LanguageItem,
    LanguagesResponse,
    NumericField,
    PeopleResponse,
    PersonItem,
    SeasonalityResponse,
    SeasonItem,
    Stats,
    SummaryResponse,
    TopItem,
    TopMetric,
    TopResponse,
    Totals,
    TrendItem,
    TrendsResponse,
)
from app.observability import SNAPSHOT_REBUILDS
from app.services.columnar import (
    BoolArray,
    FloatArray,
    GroupStats,
    IndexArray,
    IntArray,
    average_ranks,
    correlation_matrix,
    expand,
    grouped_stats,
    sorted_stats,
)
from app.services.filters import CatalogFilter
from app.services.health import EXTRA_CHECKS
from app.state import AppState

log = logging.getLogger("app.analytics")

ENGINE_KEY = "analytics"
# Every numeric field the API accepts is one the schema names; all but `imdb_score` (from the
# embedded `imdb` block) are stored top-level, read as float64 columns (null -> NaN, so that
# unknown is never zero).
NUMERIC_FIELDS: tuple[str, ...] = get_args(NumericField)
DOC_NUMERIC = tuple(f for f in NUMERIC_FIELDS if f != "imdb_score")
STAT_FIELDS = ("revenue", "budget", "profit", "roi", "vote_average", "runtime")
MONEY_FIELDS = frozenset({"budget", "revenue", "profit"})
DEFAULT_CORRELATION_FIELDS = (
    "budget",
    "revenue",
    "popularity",
    "vote_average",
    "vote_count",
    "runtime",
)
MAX_CORRELATION_FIELDS = len(NUMERIC_FIELDS)
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
    "cast.name": 1,
    "crew.name": 1,
    "crew.job": 1,
    "imdb.director": 1,
    "imdb.actors": 1,
    "imdb.score": 1,
    **dict.fromkeys(DOC_NUMERIC, 1),
}
CACHE_SIZE = 1024
CHECK_TIMEOUT_SECONDS = 1.0
# After a failed rebuild, wait this long before the next attempt (each attempt is a full scan).
REBUILD_BACKOFF_SECONDS = 30.0
# Aggregates run in worker threads; numpy releases the GIL in its kernels, and two slots keep
# a burst of distinct queries from starving the event loop's own thread on a small machine.
COMPUTE_SLOTS = 2


# --- snapshot ------------------------------------------------------------------------------


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
    _label_rank: dict[str, IntArray] = field(default_factory=dict)

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
    cursor = db[MOVIES].find_raw_batches({}, SNAPSHOT_PROJECTION)
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


# --- aggregates ----------------------------------------------------------------------------


def _opt(x: float | np.floating[Any]) -> float | None:
    value = float(x)
    return value if math.isfinite(value) else None


def _stats(gs: GroupStats, i: int, money: bool) -> Stats:
    n = int(gs.n[i])
    if n == 0:
        return Stats(n=0, sum=0.0 if money else None)
    return Stats(
        n=n,
        mean=_opt(gs.sum[i] / n),
        median=_opt(gs.median[i]),
        p25=_opt(gs.p25[i]),
        p75=_opt(gs.p75[i]),
        min=_opt(gs.min[i]),
        max=_opt(gs.max[i]),
        sum=_opt(gs.sum[i]) if money else None,
    )


def _base(snap: Snapshot, f: CatalogFilter, mask: BoolArray) -> dict[str, Any]:
    return {
        "data_version": snap.version,
        "films": int(mask.sum()),
        "filters": AppliedFilters(**f.echo()),
    }


def _group_counts(dim: Dim, mask: BoolArray) -> IntArray:
    _, codes = dim.entries(np.flatnonzero(mask))
    return np.bincount(codes, minlength=dim.size).astype(np.int64)


def _field_by_group(
    snap: Snapshot,
    dim: Dim,
    mask: BoolArray,
    name: str,
    selected: IntArray | None = None,
) -> GroupStats:
    """Stats of one field per group; `selected` restricts (and orders) the groups computed."""
    order = snap.order[name]
    rows, codes = dim.entries(order[mask[order]])
    n_groups = dim.size
    if selected is not None:
        remap = np.full(dim.size, -1, dtype=np.int64)
        remap[selected] = np.arange(selected.size)
        codes = remap[codes]
        keep = codes >= 0
        rows, codes = rows[keep], codes[keep]
        n_groups = int(selected.size)
    return grouped_stats(rows, codes, snap.num[name], n_groups)


def _economics(
    snap: Snapshot, dim: Dim, mask: BoolArray, selected: IntArray | None = None
) -> tuple[IntArray, dict[str, GroupStats]]:
    counts = _group_counts(dim, mask)
    if selected is not None:
        counts = counts[selected]
    return counts, {name: _field_by_group(snap, dim, mask, name, selected) for name in STAT_FIELDS}


def _economics_fields(counts: IntArray, stats: dict[str, GroupStats], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"count": int(counts[i])}
    for name, gs in stats.items():
        out[name] = _stats(gs, i, name in MONEY_FIELDS)
    return out


def _rank_groups(
    snap: Snapshot, name: str, dim: Dim, mask: BoolArray, sort: GroupSort, n: int, min_films: int
) -> IntArray:
    """The `n` best groups by `sort` (descending), ties by film count, then by label."""
    rows, codes = dim.entries(np.flatnonzero(mask))
    films = np.bincount(codes, minlength=dim.size)
    candidates = np.flatnonzero(films >= max(min_films, 1))
    if candidates.size == 0:
        return candidates.astype(np.int64)
    key: FloatArray
    if sort == "films":
        key = films[candidates].astype(np.float64)
    else:
        values = snap.num[sort][rows]
        known = ~np.isnan(values)
        total = np.bincount(codes[known], weights=values[known], minlength=dim.size).astype(
            np.float64
        )
        if sort == "revenue":
            key = total[candidates]
        else:
            count = np.bincount(codes[known], minlength=dim.size)[candidates]
            with np.errstate(invalid="ignore", divide="ignore"):
                key = np.where(count > 0, total[candidates] / count, -np.inf)
    label_rank = snap.label_rank(name, dim)[candidates]
    best = np.lexsort((label_rank, -films[candidates], -key))[:n]
    return candidates[best].astype(np.int64)


def summary(snap: Snapshot, f: CatalogFilter) -> SummaryResponse:
    mask = snap.mask(f)
    films = int(mask.sum())
    coverage: dict[str, Coverage] = {}
    for name in NUMERIC_FIELDS:
        known = int(np.count_nonzero(mask & ~np.isnan(snap.num[name])))
        coverage[name] = Coverage(known=known, share=known / films if films else 0.0)
    for name, dim in (
        ("genres", snap.genre),
        ("production_companies", snap.company),
        ("directors", snap.director),
        ("cast", snap.actor),
    ):
        known = int(np.count_nonzero(mask & (np.diff(dim.indptr) > 0)))
        coverage[name] = Coverage(known=known, share=known / films if films else 0.0)
    years = snap.num["release_year"][mask]
    years = years[~np.isnan(years)]

    def total(name: str) -> float:
        return float(np.nansum(snap.num[name][mask]))

    def distinct(dim: Dim) -> int:
        return int(np.count_nonzero(_group_counts(dim, mask)))

    return SummaryResponse(
        **_base(snap, f, mask),
        catalogue_films=snap.size,
        with_budget_and_revenue=coverage["profit"].known,
        year_min=int(years.min()) if years.size else None,
        year_max=int(years.max()) if years.size else None,
        coverage=coverage,
        totals=Totals(budget=total("budget"), revenue=total("revenue"), profit=total("profit")),
        distinct=Distinct(
            genres=distinct(snap.genre),
            languages=distinct(snap.language),
            companies=distinct(snap.company),
        ),
    )


def genres(snap: Snapshot, f: CatalogFilter) -> GenresResponse:
    mask = snap.mask(f)
    counts, stats = _economics(snap, snap.genre, mask)
    present = np.flatnonzero(counts > 0)
    rank = snap.label_rank("genre", snap.genre)
    ordered = present[np.lexsort((rank[present], -counts[present]))]
    items = [
        GenreItem(genre=snap.genre.labels[i], **_economics_fields(counts, stats, int(i)))
        for i in ordered
    ]
    return GenresResponse(**_base(snap, f, mask), items=items)


def trends(
    snap: Snapshot, f: CatalogFilter, by: Literal["year", "month", "decade"]
) -> TrendsResponse:
    mask = snap.mask(f)
    dim = {"year": snap.year, "month": snap.year_month, "decade": snap.decade}[by]
    counts, stats = _economics(snap, dim, mask)
    items = [
        TrendItem(period=dim.labels[i], **_economics_fields(counts, stats, int(i)))
        for i in np.flatnonzero(counts > 0)
    ]
    return TrendsResponse(**_base(snap, f, mask), by=by, items=items)


def seasonality(snap: Snapshot, f: CatalogFilter) -> SeasonalityResponse:
    mask = snap.mask(f)
    counts, stats = _economics(snap, snap.month, mask)
    items = [
        SeasonItem(
            month=i + 1,
            month_name=calendar.month_name[i + 1],
            **_economics_fields(counts, stats, i),
        )
        for i in range(12)
    ]
    return SeasonalityResponse(**_base(snap, f, mask), items=items)


def _extreme_rows(
    ranked: IndexArray, mask: BoolArray, values: FloatArray, k: int, desc: bool
) -> IndexArray:
    """The `k` matching rows with the highest (`desc`) or lowest values, plus every row tied
    with the k-th. `ranked` ascends by value, so the answer sits at one end: it is scanned from
    there in growing chunks instead of filtering the whole order."""
    seq = ranked[::-1] if desc else ranked  # a view: values now run towards the far end
    found: list[IndexArray] = []
    count, end, step = 0, 0, max(4 * k, 4096)
    cut: float | None = None
    while end < seq.size:
        start, end = end, min(seq.size, end + step)
        part = seq[start:end]
        part = part[mask[part]]
        found.append(part)
        count += part.size
        if cut is None and count >= k:
            cut = float(values[np.concatenate(found)[k - 1]])
        if cut is not None:
            last = float(values[seq[end - 1]])
            if (last < cut) if desc else (last > cut):
                break  # past the k-th value and its ties
        step *= 2
    rows = np.concatenate(found) if found else np.empty(0, dtype=np.intp)
    if cut is not None:
        rows = rows[values[rows] >= cut] if desc else rows[values[rows] <= cut]
    return rows


def top(
    snap: Snapshot, f: CatalogFilter, metric: TopMetric, n: int, order: Literal["desc", "asc"]
) -> TopResponse:
    mask = snap.mask(f)
    values = snap.num[metric]
    candidates = _extreme_rows(snap.order[metric], mask, values, n, order == "desc")
    key = -values[candidates] if order == "desc" else values[candidates]
    chosen = candidates[np.lexsort((snap.ids[candidates], key))[:n]]  # ties by id
    year = snap.num["release_year"]
    items = [
        TopItem(
            id=int(snap.ids[r]),
            title=snap.titles[r],
            release_year=None if np.isnan(year[r]) else int(year[r]),
            value=float(values[r]),
        )
        for r in chosen
    ]
    return TopResponse(**_base(snap, f, mask), metric=metric, order=order, items=items)


def distribution(
    snap: Snapshot,
    f: CatalogFilter,
    name: NumericField,
    bins: int,
    scale: Literal["linear", "log"],
) -> DistributionResponse:
    mask = snap.mask(f)
    ranked = snap.order[name]
    values = snap.num[name][ranked[mask[ranked]]]  # ascending
    unknown = int(mask.sum()) - values.size
    usable = values[np.searchsorted(values, 0.0, side="right") :] if scale == "log" else values
    edges: FloatArray = np.empty(0)
    counts: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
    if usable.size:
        lo, hi = float(usable[0]), float(usable[-1])
        if scale == "log":
            if lo == hi:
                edges = np.logspace(math.log10(lo) - 0.5, math.log10(hi) + 0.5, bins + 1)
            else:
                edges = np.logspace(math.log10(lo), math.log10(hi), bins + 1)
                # Exact end points: rounding in logspace must not drop the extremes.
                edges[0], edges[-1] = lo, hi
            counts, _ = np.histogram(usable, bins=edges)
        else:
            counts, edges = np.histogram(usable, bins=bins)
    return DistributionResponse(
        **_base(snap, f, mask),
        field=name,
        scale=scale,
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        unknown=unknown,
        excluded=values.size - usable.size,
        stats=_stats(sorted_stats(values), 0, name in MONEY_FIELDS),
    )


def parse_fields(text: str | None) -> tuple[NumericField, ...]:
    """`a,b,c` -> validated, de-duplicated numeric field names."""
    if text is None or not text.strip():
        return cast(tuple[NumericField, ...], DEFAULT_CORRELATION_FIELDS)
    names = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in names if p not in NUMERIC_FIELDS]
    if unknown:
        raise InvalidQueryError(
            f"fields: unknown {', '.join(unknown)}; choose from {', '.join(NUMERIC_FIELDS)}"
        )
    if not 2 <= len(names) <= MAX_CORRELATION_FIELDS:
        raise InvalidQueryError(f"fields: give 2 to {MAX_CORRELATION_FIELDS} distinct fields")
    return cast(tuple[NumericField, ...], tuple(names))


def correlations(
    snap: Snapshot,
    f: CatalogFilter,
    fields: Sequence[NumericField],
    method: Literal["pearson", "spearman"],
) -> CorrelationsResponse:
    mask = snap.mask(f)
    rows = mask.copy()
    for name in fields:
        rows &= ~np.isnan(snap.num[name])
    columns = [snap.num[name][rows] for name in fields]
    if method == "spearman":
        columns = [average_ranks(c) for c in columns]
    matrix = correlation_matrix(columns)
    return CorrelationsResponse(
        **_base(snap, f, mask),
        method=method,
        fields=list(fields),
        n=int(rows.sum()),
        matrix=[[_opt(x) for x in row] for row in matrix],
    )


def people(
    snap: Snapshot,
    f: CatalogFilter,
    role: Literal["director", "actor"],
    sort: GroupSort,
    n: int,
    min_films: int,
) -> PeopleResponse:
    mask = snap.mask(f)
    dim = snap.director if role == "director" else snap.actor
    chosen = _rank_groups(snap, role, dim, mask, sort, n, min_films)
    films = _group_counts(dim, mask)[chosen]
    revenue = _field_by_group(snap, dim, mask, "revenue", chosen)
    votes = _field_by_group(snap, dim, mask, "vote_average", chosen)
    years = _field_by_group(snap, dim, mask, "release_year", chosen)
    items = [
        PersonItem(
            name=dim.labels[g],
            films=int(films[i]),
            revenue=_stats(revenue, i, True),
            vote_average=_stats(votes, i, False),
            first_year=None if years.n[i] == 0 else int(years.min[i]),
            last_year=None if years.n[i] == 0 else int(years.max[i]),
        )
        for i, g in enumerate(chosen)
    ]
    return PeopleResponse(**_base(snap, f, mask), role=role, sort=sort, items=items)


def companies(
    snap: Snapshot, f: CatalogFilter, sort: GroupSort, n: int, min_films: int
) -> CompaniesResponse:
    mask = snap.mask(f)
    chosen = _rank_groups(snap, "company", snap.company, mask, sort, n, min_films)
    counts, stats = _economics(snap, snap.company, mask, chosen)
    items = [
        CompanyItem(company=snap.company.labels[g], **_economics_fields(counts, stats, i))
        for i, g in enumerate(chosen)
    ]
    return CompaniesResponse(**_base(snap, f, mask), sort=sort, items=items)


def languages(
    snap: Snapshot, f: CatalogFilter, sort: GroupSort, n: int, min_films: int
) -> LanguagesResponse:
    mask = snap.mask(f)
    chosen = _rank_groups(snap, "language", snap.language, mask, sort, n, min_films)
    counts, stats = _economics(snap, snap.language, mask, chosen)
    items = [
        LanguageItem(language=snap.language.labels[g], **_economics_fields(counts, stats, i))
        for i, g in enumerate(chosen)
    ]
    return LanguagesResponse(**_base(snap, f, mask), sort=sort, items=items)


# --- engine --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """A serialized answer and the catalogue version it describes."""

    body: bytes
    data_version: int
    cache_hit: bool
    # True while the database is failing: the answer comes from the last snapshot.
    stale: bool = False


CacheKey = tuple[int, Callable[..., BaseModel], tuple[Hashable, ...]]


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
    ) -> None:
        self._db = db
        self._check_seconds = check_seconds
        self._cache_size = cache_size
        self._snapshot: Snapshot | None = None
        self._build: asyncio.Task[Snapshot] | None = None
        self._check: asyncio.Task[None] | None = None
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
        """Begin the first build without waiting for it (startup must not block on a scan)."""
        self._ensure_build()

    async def settled(self) -> Snapshot:
        """Wait for a build in progress (if any) and return the snapshot (tests, benchmark)."""
        if self._build is not None and not self._build.done():
            await asyncio.shield(self._build)
        return await self.snapshot()

    async def close(self) -> None:
        tasks = [t for t in (self._build, self._check, *self._inflight.values()) if t]
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
        snap = await load_snapshot(self._db, build_id)
        SNAPSHOT_REBUILDS.inc()
        self._snapshot = snap
        self._cache.clear()  # entries are keyed by build id; drop the old ones at once
        log.info(
            "analytics snapshot v%s: %d films in %.2fs", snap.version, snap.size, snap.build_seconds
        )
        return snap

    async def _check_version(self) -> None:
        try:
            version = await get_data_version(self._db)
        except PyMongoError as exc:
            self._check_failed = True
            log.warning("data version check failed: %s", exc.__class__.__name__)
            return
        self._check_failed = False
        snap = self._snapshot
        backing_off = time.monotonic() - self._build_failed_at < REBUILD_BACKOFF_SECONDS
        if snap is not None and version != snap.version and not backing_off:
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
        now = time.monotonic()
        if now - self._last_check >= self._check_seconds and (
            self._check is None or self._check.done()
        ):
            self._last_check = now
            self._check = asyncio.create_task(self._check_version())
            # Waiting makes a write visible to the next request's check; the wait is bounded,
            # and skipped while the database is failing (answers then come from the snapshot).
            if not self._check_failed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._check), CHECK_TIMEOUT_SECONDS)
        return snap

    async def run(self, compute: Callable[..., BaseModel], *args: Hashable) -> Result:
        """`compute(snapshot, *args)` as JSON, cached per (snapshot, compute, args).

        Concurrent identical queries share one computation, which runs in a worker thread
        and completes (and is cached) even when the client that started it goes away.
        """
        snap = await self.snapshot()
        key: CacheKey = (snap.build_id, compute, args)
        body = self._cache.get(key)
        if body is not None:
            self._cache.move_to_end(key)
            return Result(body, snap.version, True, self._check_failed)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._compute(key, snap, compute, args))
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return Result(await asyncio.shield(task), snap.version, False, self._check_failed)

    async def _compute(
        self,
        key: CacheKey,
        snap: Snapshot,
        compute: Callable[..., BaseModel],
        args: tuple[Hashable, ...],
    ) -> bytes:
        def work() -> bytes:
            return compute(snap, *args).model_dump_json().encode()

        async with self._slots:
            body = await asyncio.to_thread(work)
        if self._snapshot is snap:
            self._cache[key] = body
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return body


async def analytics_check(state: AppState) -> str:
    engine = state.extras.get(ENGINE_KEY)
    if not isinstance(engine, AnalyticsEngine):
        return "not ready: analytics engine not started"
    return await engine.readiness()


EXTRA_CHECKS["analytics"] = analytics_check
