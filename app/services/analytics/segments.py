"""Segments of the catalogue: k-means clusters of the films matching the filters, in the film
feature space of similar films (app.services.analytics.film_space), each described by what
sets it apart: over-represented genres and keywords, dominant decades, budget and revenue
medians, and the films nearest its centre.

Rows are unit vectors, so k-means' squared distance is 2 - 2 cos: clusters gather films of
high mutual cosine similarity. Seeded, so one query always gives the same answer; computed
once per (snapshot, filters, k) by the engine's cache.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from app.models.analytics import AppliedFilters
from app.models.segments import CatalogueMedians, DecadeShare, LabelShare, Segment, SegmentsResponse
from app.models.similar import FilmRef
from app.services.analytics.film_space import WEIGHTS, film_space
from app.services.analytics.snapshot import MultiDim, Snapshot
from app.services.columnar import FloatArray, IndexArray, IntArray, expand
from app.services.filters import CatalogFilter

SEED = 0
N_INIT = 4
# Above this many films, mini-batch k-means: full Lloyd iterations over a million sparse rows
# would take minutes; mini-batches take seconds for nearly the same clusters.
MINIBATCH_FROM = 50_000
TOP_GENRES = 3
TOP_KEYWORDS = 5
MIN_KEYWORD_FILMS = 2
TOP_DECADES = 3
EXAMPLES = 3
# A segment's median budget at least this many times the films' overall median (or at most
# its inverse) reads "larger budgets" ("smaller budgets") in its label.
BUDGET_CONTRAST = 2.0

_controller: Any = None


def _one_openmp_thread() -> Any:
    """k-means runs in an engine worker thread beside requests: one OpenMP thread for it (the
    limit is per calling thread; see app.ml.fastpath for the measurements behind this)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="openmp")


def assign(snap: Snapshot, rows: IndexArray, k: int) -> tuple[IntArray, FloatArray]:
    """(segment of each of `rows`, its distance to the segment's centre). Segments are
    numbered by size, largest first (ties: the one holding the earliest row first); at most
    `k`, fewer when there are fewer films (or fewer distinct ones)."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    X = film_space(snap).matrix[rows]
    clusters = min(k, len(rows))
    model: KMeans | MiniBatchKMeans
    if len(rows) < MINIBATCH_FROM:
        model = KMeans(n_clusters=clusters, n_init=N_INIT, random_state=SEED)
    else:
        model = MiniBatchKMeans(n_clusters=clusters, n_init=3, batch_size=4096, random_state=SEED)
    with _one_openmp_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer distinct points than clusters": fine here
        raw = np.asarray(model.fit_predict(X), dtype=np.int64)
        distance = np.asarray(model.transform(X), dtype=np.float64)[np.arange(len(rows)), raw]
    sizes = np.bincount(raw, minlength=clusters)
    first = np.full(clusters, len(rows))
    np.minimum.at(first, raw, np.arange(len(rows)))
    present = np.flatnonzero(sizes)
    order = present[np.lexsort((first[present], -sizes[present]))]
    renumber = np.zeros(clusters, dtype=np.int64)
    renumber[order] = np.arange(len(order))
    return renumber[raw], distance


def _presence(dim: MultiDim, rows: IndexArray) -> tuple[IntArray, IntArray]:
    """(position in `rows`, label) once per film and label."""
    starts = dim.indptr[rows]
    lens = dim.indptr[rows + 1] - starts
    pos = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
    codes = dim.codes[expand(starts, lens)].astype(np.int64)
    pairs = np.unique(pos * dim.size + codes.astype(np.int64))
    return pairs // dim.size, pairs % dim.size


def _shares(
    dim: MultiDim,
    rows: IndexArray,
    labels: IntArray,
    segments: int,
    top: int,
    min_films: int,
) -> list[list[LabelShare]]:
    """Per segment, the labels most over-represented against all `rows` (share in the
    segment minus share overall; ties by name), of at least `min_films` films there."""
    pos, codes = _presence(dim, rows)
    counts = np.bincount(labels[pos] * dim.size + codes, minlength=segments * dim.size).reshape(
        segments, dim.size
    )
    overall = counts.sum(axis=0) / len(rows)
    sizes = np.bincount(labels, minlength=segments)
    out = []
    for s in range(segments):
        seen = np.flatnonzero(counts[s] >= max(1, min_films))
        share = counts[s, seen] / sizes[s]
        lift = share - overall[seen]
        keep = lift > 0
        ranked = sorted(
            zip(lift[keep].tolist(), seen[keep].tolist(), share[keep].tolist(), strict=True),
            key=lambda t: (-t[0], dim.labels[t[1]]),
        )[:top]
        out.append(
            [
                LabelShare(name=dim.labels[c], share=sh, catalogue_share=float(overall[c]))
                for _, c, sh in ranked
            ]
        )
    return out


def _median(values: FloatArray) -> float | None:
    known = values[~np.isnan(values)]
    return float(np.median(known)) if known.size else None


def _label(
    genres: list[LabelShare],
    decades: list[DecadeShare],
    budget: float | None,
    overall: float | None,
) -> str:
    parts = []
    if genres:
        parts.append(" & ".join(g.name for g in genres[:2]))
    if decades:
        parts.append(f"{decades[0].decade}s")
    if budget is not None and overall:
        if budget >= BUDGET_CONTRAST * overall:
            parts.append("larger budgets")
        elif budget <= overall / BUDGET_CONTRAST:
            parts.append("smaller budgets")
    return ", ".join(parts) or "films with few known facts"


def segments(snap: Snapshot, f: CatalogFilter, k: int) -> SegmentsResponse:
    """The films matching `f` in (at most) `k` k-means segments, described."""
    rows = np.flatnonzero(snap.mask(f))
    labels, distance = assign(snap, rows, k)
    count = int(labels.max()) + 1 if len(labels) else 0
    genres = _shares(snap.genre, rows, labels, count, TOP_GENRES, 1) if count else []
    keywords = (
        _shares(snap.keyword, rows, labels, count, TOP_KEYWORDS, MIN_KEYWORD_FILMS) if count else []
    )
    budget, revenue = snap.num["budget"][rows], snap.num["revenue"][rows]
    overall_budget = _median(budget)
    decade_codes = snap.decade.codes[rows]
    items = []
    for s in range(count):
        members = np.flatnonzero(labels == s)
        known = decade_codes[members][decade_codes[members] >= 0]
        tally = np.bincount(known, minlength=snap.decade.size)
        ranked = sorted((c for c in np.flatnonzero(tally).tolist()), key=lambda c: (-tally[c], c))[
            :TOP_DECADES
        ]
        decades = [
            DecadeShare(decade=int(snap.decade.labels[c]), share=float(tally[c] / known.size))
            for c in ranked
        ]
        nearest = members[np.lexsort((snap.ids[rows[members]], distance[members]))][:EXAMPLES]
        seg_budget = _median(budget[members])
        items.append(
            Segment(
                segment=s,
                size=len(members),
                share=len(members) / len(rows),
                label=_label(genres[s], decades, seg_budget, overall_budget),
                genres=genres[s],
                keywords=keywords[s],
                decades=decades,
                budget_median=seg_budget,
                revenue_median=_median(revenue[members]),
                examples=[
                    FilmRef(id=int(snap.ids[rows[p]]), title=snap.titles[rows[p]])
                    for p in nearest.tolist()
                ],
            )
        )
    return SegmentsResponse(
        data_version=snap.version,
        films=len(rows),
        filters=AppliedFilters(**f.echo()),
        k=k,
        weights=dict(WEIGHTS),
        catalogue=CatalogueMedians(budget_median=overall_budget, revenue_median=_median(revenue)),
        items=items,
    )
