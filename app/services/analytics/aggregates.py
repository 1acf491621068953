"""Every aggregate the API serves, as a pure function of (snapshot, normalized query) that
returns the response model: the engine caches and serializes their results."""

from __future__ import annotations

import calendar
import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from app.errors import InvalidQueryError
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
from app.services.analytics.snapshot import NUMERIC_FIELDS, Dim, Snapshot
from app.services.columnar import (
    BoolArray,
    FloatArray,
    GroupStats,
    IndexArray,
    IntArray,
    average_ranks,
    correlation_matrix,
    grouped_stats,
    sorted_stats,
)
from app.services.filters import CatalogFilter

STAT_FIELDS = ("revenue", "budget", "profit", "roi", "vote_average", "runtime")
MONEY_FIELDS = frozenset({"budget", "revenue", "profit"})
DEFAULT_CORRELATION_FIELDS: tuple[NumericField, ...] = (
    "budget",
    "revenue",
    "popularity",
    "vote_average",
    "vote_count",
    "runtime",
)
MAX_CORRELATION_FIELDS = len(NUMERIC_FIELDS)


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
    best = np.lexsort((label_rank, -films[candidates], -_tie_safe(key)))[:n]
    return candidates[best].astype(np.int64)


def _tie_safe(key: FloatArray) -> FloatArray:
    """`key` to 12 significant digits: two means equal but for the order their values were
    added in (which follows the snapshot's row order) tie, and the tie-breakers decide."""
    out = key.copy()
    finite = np.isfinite(key) & (key != 0)
    if finite.any():
        scale = 10.0 ** (11 - np.floor(np.log10(np.abs(key[finite]))))
        out[finite] = np.round(key[finite] * scale) / scale
    return out


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
        return DEFAULT_CORRELATION_FIELDS
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
