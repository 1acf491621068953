"""Numpy kernels behind the analytics engine: grouped order statistics in linear time.

The snapshot keeps, for every numeric field, the rows with a known value sorted by that value.
Filtering such an order keeps it sorted, and a stable counting sort by group code (numpy's
radix sort for 16-bit keys) then yields the values sorted within each group, so that median
and quartiles of every group are read off by index arithmetic: no per-query comparison sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
# Row indexes and group codes: int32 in the snapshot (half the memory), intp when computed.
IndexArray = npt.NDArray[np.integer[Any]]
BoolArray = npt.NDArray[np.bool_]
# Quantiles use linear interpolation between closest ranks (numpy's and pandas' default).
QUANTILES = (0.25, 0.5, 0.75)


def expand(starts: npt.NDArray[np.integer], lens: npt.NDArray[np.integer]) -> IndexArray:
    """Concatenate the ranges [starts[k], starts[k] + lens[k]) without a Python loop."""
    lens = lens.astype(np.intp, copy=False)
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, dtype=np.intp)
    first = np.cumsum(lens) - lens  # where range k begins in the output
    return np.repeat(starts.astype(np.intp, copy=False) - first, lens) + np.arange(
        total, dtype=np.intp
    )


def small_codes(codes: npt.NDArray[np.integer], groups: int) -> npt.NDArray[np.integer]:
    """Narrow group codes to 16 bits when they fit: numpy's stable sort is then a radix sort."""
    if groups <= np.iinfo(np.int16).max:
        return codes.astype(np.int16, copy=False)
    return codes.astype(np.int32, copy=False)


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Per-group statistics of the known values; NaN where a group has none."""

    n: IntArray
    sum: FloatArray
    min: FloatArray
    max: FloatArray
    p25: FloatArray
    median: FloatArray
    p75: FloatArray

    @property
    def mean(self) -> FloatArray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sum / self.n


def grouped_stats(
    rows: npt.NDArray[np.integer],
    groups: npt.NDArray[np.integer],
    values: FloatArray,
    n_groups: int,
) -> GroupStats:
    """Statistics per group of `values[rows]`.

    `rows` must be sorted by value (ascending) and `groups[i]` is the group (0..n_groups-1)
    that `rows[i]` counts towards; a row may appear once per group it belongs to.
    """
    codes = small_codes(groups, n_groups)
    by_group = np.argsort(codes, kind="stable")  # keeps the value order within each group
    v = values[rows[by_group]]
    g = codes[by_group]
    n = np.bincount(g, minlength=n_groups).astype(np.int64)
    total = np.bincount(g, weights=v, minlength=n_groups).astype(np.float64)
    end = np.cumsum(n)
    start = end - n
    has = n > 0
    nan = np.full(n_groups, np.nan)
    lo_v, hi_v = nan.copy(), nan.copy()
    lo_v[has] = v[start[has]]
    hi_v[has] = v[end[has] - 1]
    quantiles = []
    for q in QUANTILES:
        out = nan.copy()
        pos = start[has] + q * (n[has] - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, end[has] - 1)
        frac = pos - lo
        below, above = v[lo], v[hi]
        diff = above - below
        # numpy's lerp: interpolating from the nearer end keeps e.g. the median of (6.1, 6.3)
        # at 6.2 rather than 6.199999999999999.
        out[has] = np.where(frac >= 0.5, above - diff * (1 - frac), below + diff * frac)
        quantiles.append(out)
    total[~has] = np.nan
    return GroupStats(
        n=n, sum=total, min=lo_v, max=hi_v, p25=quantiles[0], median=quantiles[1], p75=quantiles[2]
    )


def sorted_stats(values_sorted: FloatArray) -> GroupStats:
    """Statistics of one ascending array, in the same shape as one group of `grouped_stats`."""
    rows = np.arange(values_sorted.size, dtype=np.intp)
    return grouped_stats(rows, np.zeros(values_sorted.size, dtype=np.int16), values_sorted, 1)


def average_ranks(x: FloatArray) -> FloatArray:
    """Ranks 1..n with ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # Boundaries of runs of equal values; every member gets the mean of the run's ranks.
    new_run = np.empty(xs.size, dtype=bool)
    if xs.size:
        new_run[0] = True
        new_run[1:] = xs[1:] != xs[:-1]
    run_id = np.cumsum(new_run) - 1
    run_start = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_start, xs.size))
    avg = run_start + (run_len + 1) / 2.0
    ranks = np.empty(xs.size, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def correlation_matrix(columns: list[FloatArray]) -> FloatArray:
    """Pearson correlation of equally long columns; NaN where a column is constant."""
    k = len(columns)
    if not columns or columns[0].size < 2:
        return np.full((k, k), np.nan)
    x = np.vstack(columns)
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.sqrt((x * x).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (x @ x.T) / np.outer(norms, norms)
    corr = np.asarray(np.clip(corr, -1.0, 1.0), dtype=np.float64)
    finite = np.isfinite(np.diag(corr))
    np.fill_diagonal(corr, np.where(finite, 1.0, np.nan))
    return corr
