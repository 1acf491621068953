"""The film feature space behind similar films (`/v1/movies/{id}/similar`) and segments
(`/v1/analytics/segments`): one sparse row per film of the analytics snapshot, built once per
snapshot (`Snapshot.derived`) and so rebuilt with it when the catalogue changes.

A row is five blocks, each L2-normalized on its own (a film that knows nothing of a block has
zeros there), scaled by the square root of its weight, then the whole row L2-normalized:

* `genres`: TF-IDF over genres (binary term frequency, smooth idf
  `ln((1 + N) / (1 + df)) + 1`, N the catalogue's films, df the films with the label);
* `keywords`: the same over keywords that at least two films share (a keyword of one film
  can match no other; it would only dilute the film's row);
* `people`: the same over directors and the first `LEAD_CAST` actors (credits, then the IMDB
  enrichment, in the snapshot's order), directors and actors as separate columns, names that
  at least two films share;
* `era`: the release year as Gaussian bumps (sigma `ERA_SIGMA` years) on centers every 5 years
  from 1870 to 2030, zero beyond 3 sigma: two films' era similarity falls smoothly with the
  years between them (about 0.78 at 5 years, 0.37 at 10, nothing at 30);
* `scale`: log10 budget and log10 revenue the same way (sigma `SCALE_SIGMA` decades, centers
  every quarter decade from 10^3 to 10^10 dollars), the two concatenated in one block.

The cosine of two rows is then the weighted mean of the blocks' cosines over the blocks each
film knows: sum_b w_b cos_b / sqrt(W_i W_j), W the total weight of the blocks a film knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from app.services.analytics.snapshot import MultiDim, Snapshot
from app.services.columnar import FloatArray, expand

WEIGHTS: dict[str, float] = {
    "genres": 1.0,
    "keywords": 1.0,
    "people": 1.0,
    "era": 0.5,
    "scale": 0.5,
}
LEAD_CAST = 5
MIN_SHARED = 2  # keywords and people: labels of at least this many films
ERA_CENTERS = np.arange(1870.0, 2030.0 + 1, 5.0)
ERA_SIGMA = 5.0
SCALE_CENTERS = np.arange(3.0, 10.0 + 1e-9, 0.25)
SCALE_SIGMA = 0.35
CUTOFF_SIGMAS = 3.0
KEY = "film_space"
# scipy.sparse.csr_matrix; scipy is untyped here (mypy sees Any).
Csr: TypeAlias = Any


@dataclass(frozen=True)
class FilmSpace:
    """The rows of one snapshot (row r is the snapshot's row r) and where each block sits."""

    matrix: Csr  # (films, columns); every row unit length, or zero when nothing is known
    blocks: dict[str, tuple[int, int]]  # block -> [start, end) columns
    row_of: dict[int, int]  # film id -> row


def unit_rows(m: Csr) -> Csr:
    """`m` with every nonzero row scaled to unit L2 length (zero rows, and zero-width
    matrices, stay as they are)."""
    m = sp.csr_matrix(m, dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (sp.diags(scale) @ m).tocsr()


def tfidf(
    rows: npt.NDArray[np.integer],
    codes: npt.NDArray[np.integer],
    n: int,
    width: int,
    min_df: int = 1,
) -> Csr:
    """Binary TF-IDF of (row, label) pairs (repeats count once), labels of at least `min_df`
    films kept, rows L2-normalized."""
    data = np.ones(len(rows), dtype=np.float64)
    m = sp.csr_matrix((data, (rows, codes)), shape=(n, width))
    m.sum_duplicates()
    m.data[:] = 1.0
    df = np.bincount(m.indices, minlength=width)
    keep = np.flatnonzero(df >= min_df)
    m = m[:, keep]
    idf = np.log((1.0 + n) / (1.0 + df[keep])) + 1.0
    return unit_rows(m @ sp.diags(idf))


def _multi(dim: MultiDim, n: int, min_df: int, first: int | None = None) -> Csr:
    starts = dim.indptr[:-1]
    lens = dim.indptr[1:] - starts
    if first is not None:
        lens = np.minimum(lens, first)
    rows = np.repeat(np.arange(n), lens)
    codes = dim.codes[expand(starts, lens)]
    return tfidf(rows, codes, n, dim.size, min_df)


def soft_bins(values: FloatArray, centers: FloatArray, sigma: float) -> Csr:
    """Gaussian bumps of each known value on `centers` (values clipped to their range),
    zero beyond `CUTOFF_SIGMAS`; unknown values give an empty row. Not normalized."""
    n = len(values)
    known = np.flatnonzero(~np.isnan(values))
    clipped = np.clip(values[known], centers[0], centers[-1])
    step = float(centers[1] - centers[0])
    reach = math.floor(CUTOFF_SIGMAS * sigma / step) + 1
    nearest = np.rint((clipped - centers[0]) / step).astype(np.int64)
    offsets = np.arange(-reach, reach + 1)
    cols = nearest[:, None] + offsets[None, :]
    valid = (cols >= 0) & (cols < len(centers))
    safe = np.clip(cols, 0, len(centers) - 1)
    z = (clipped[:, None] - centers[safe]) / sigma
    valid &= np.abs(z) <= CUTOFF_SIGMAS
    weights = np.exp(-0.5 * z * z)
    rows = np.broadcast_to(known[:, None], cols.shape)
    return sp.csr_matrix((weights[valid], (rows[valid], cols[valid])), shape=(n, len(centers)))


def _log10(values: FloatArray) -> FloatArray:
    out = np.full(len(values), np.nan)
    positive = values > 0
    out[positive] = np.log10(values[positive])
    return out


def blocks(snap: Snapshot) -> dict[str, Csr]:
    """The five blocks of `snap`, each row L2-normalized (zero where unknown)."""
    n = snap.size
    people = sp.hstack(
        [
            _multi(snap.director, n, MIN_SHARED),
            _multi(snap.actor, n, MIN_SHARED, first=LEAD_CAST),
        ]
    ).tocsr()
    # Directors and actors were normalized apart: one block, normalized again as a whole.
    scale = sp.hstack(
        [
            soft_bins(_log10(snap.num["budget"]), SCALE_CENTERS, SCALE_SIGMA),
            soft_bins(_log10(snap.num["revenue"]), SCALE_CENTERS, SCALE_SIGMA),
        ]
    ).tocsr()
    return {
        "genres": _multi(snap.genre, n, 1),
        "keywords": _multi(snap.keyword, n, MIN_SHARED),
        "people": unit_rows(people),
        "era": unit_rows(soft_bins(snap.num["release_year"], ERA_CENTERS, ERA_SIGMA)),
        "scale": unit_rows(scale),
    }


def build(snap: Snapshot) -> FilmSpace:
    parts = blocks(snap)
    spans: dict[str, tuple[int, int]] = {}
    start = 0
    for name, block in parts.items():
        spans[name] = (start, start + block.shape[1])
        start += block.shape[1]
    weighted = sp.hstack([math.sqrt(WEIGHTS[name]) * b for name, b in parts.items()]).tocsr()
    matrix = unit_rows(weighted)
    matrix.sort_indices()
    return FilmSpace(
        matrix=matrix,
        blocks=spans,
        row_of={int(i): r for r, i in enumerate(snap.ids.tolist())},
    )


def film_space(snap: Snapshot) -> FilmSpace:
    """The space of `snap`, built on first use and kept as long as the snapshot serves."""
    return snap.derived(KEY, build)
