"""The tree walk of `app.ml.fastpath._PerfectForest` as machine code (numba), built in the
background once the service is up.

The numpy walk takes one array operation per tree level over every (row, tree) pair: cheap
per call, but a 1,000-film batch of a 1,300-tree blend still costs ~21 ms in two threads,
and one film pays numpy's per-call cost about 25 times. Compiled, the same walk is a loop per
(row, tree) that releases the GIL: ~10 ms for the batch in two threads, a few times less for
one film (`bench/RESULTS.md`, predict-notes).

Nothing waits for it: `ready()` is None until `start()`'s thread has compiled the kernel
(about 1 s, or 0.5 s from numba's on-disk cache) and checked it against a plain-Python walk
of random trees (NaN inputs, missing values sent left and right, leaves above full depth);
until then, or if numba cannot build or the check fails, the numpy walk serves. Both give the
same leaves bit for bit (`tests/test_fastpath_blend.py`), so which one ran never changes an
answer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

# (rows: each row then again with NaN as -inf; per node, the column of such a row it reads;
#  per node, its threshold; leaf values; per depth group, its depth and number of trees;
#  out, rows x trees) -> None. Trees are padded to their group's depth, in heap order.
Kernel = Callable[..., None]

_kernel: Kernel | None = None
_started = False
_lock = threading.Lock()


def ready() -> Kernel | None:
    """The compiled walk, once built and checked; None before (or without) it."""
    return _kernel


def start(
    cache_dir: Path | None = None, then: Callable[[], None] | None = None
) -> threading.Thread | None:
    """Build the kernel in a daemon thread (once per process; None when already started).
    `cache_dir`: where numba keeps compiled code between runs, unless `NUMBA_CACHE_DIR`
    says otherwise; `then`: called in that thread once the kernel serves."""
    global _started
    with _lock:
        if _started:
            return None
        _started = True
    if cache_dir is not None:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir))
    thread = threading.Thread(target=_build_quietly, args=(then,), name="tree-kernel", daemon=True)
    thread.start()
    return thread


def build() -> Kernel | None:
    """Compile and check the kernel now, in this thread; it serves from then on when the
    check passes (None when it fails)."""
    global _kernel
    kernel = _compile()
    if not _agrees(kernel):
        log.error("compiled tree walk disagrees with the reference walk: not used")
        return None
    _kernel = kernel
    return kernel


def disable() -> None:
    """Back to the numpy walk (tests and benchmarks compare the two)."""
    global _kernel
    _kernel = None


def _build_quietly(then: Callable[[], None] | None) -> None:
    try:
        if build() is not None and then is not None:
            then()
    except Exception:  # no numba, no compiler, a broken cache: the numpy walk serves
        log.exception("compiled tree walk unavailable; the numpy walk serves")


def _compile() -> Kernel:
    import numba  # imported here: ~0.3 s that only the service's background thread pays

    def walk(
        rows: Any, columns: Any, threshold: Any, value: Any, depths: Any, counts: Any, out: Any
    ) -> None:  # pragma: no cover - runs compiled
        node_base = 0  # first node of the current tree in `columns` and `threshold`
        leaf_base = 0  # its first leaf in `value`
        tree = 0  # its column in `out`
        for g in range(depths.shape[0]):
            depth = depths[g]
            inner = (1 << depth) - 1
            for _ in range(counts[g]):
                for r in range(rows.shape[0]):
                    row = rows[r]
                    at = 0
                    for _ in range(depth):
                        node = node_base + at
                        # Heap order: children of `at` are 2at+1 (left) and 2at+2 (right).
                        at = 2 * at + 2 - int(row[columns[node]] <= threshold[node])
                    out[r, tree] = value[leaf_base + at - inner]
                node_base += inner
                leaf_base += inner + 1
                tree += 1

    try:
        kernel: Kernel = numba.njit(nogil=True, cache=True)(walk)
        _smoke(kernel)
    except RuntimeError:  # no writable cache directory: compile for this process only
        kernel = numba.njit(nogil=True)(walk)
        _smoke(kernel)
    return kernel


def _smoke(kernel: Kernel) -> None:
    out = np.zeros((1, 1))
    one = np.ones(1, dtype=np.intp)
    kernel(np.zeros((1, 2)), np.zeros(1, dtype=np.intp), np.zeros(1), np.ones(2), one, one, out)


def _agrees(kernel: Kernel, seed: int = 0) -> bool:
    """The kernel against a plain-Python walk of random padded trees of depths 1-6, all in one
    call as a forest's depth groups are."""
    rng = np.random.default_rng(seed)
    width, trees = 5, 7
    X = rng.normal(size=(40, width))
    X[rng.random(X.shape) < 0.2] = np.nan
    X[0] = np.nan  # a row with nothing known
    rows = np.hstack([X, np.where(np.isnan(X), -np.inf, X)])
    known = X[~np.isnan(X)]
    depths = np.arange(1, 7, dtype=np.intp)
    parts: list[tuple[npt.NDArray[Any], ...]] = []
    wanted = []
    for depth in depths.tolist():
        inner = 2**depth - 1
        feature = rng.integers(0, width, size=trees * inner)
        missing_left = rng.random(trees * inner) < 0.5
        threshold = rng.normal(size=trees * inner)
        # Some inputs equal to a threshold (they go left), and padding (always left).
        on_value = rng.random(trees * inner) < 0.3
        threshold[on_value] = rng.choice(known, size=int(on_value.sum()))
        threshold[rng.random(trees * inner) < 0.2] = np.inf
        value = rng.normal(size=trees * (inner + 1))
        parts.append(((feature + missing_left * width).astype(np.intp), threshold, value))
        wanted.append(_reference(X, feature, missing_left, threshold, value, depth))
    got = np.full((len(X), trees * len(depths)), np.nan)
    kernel(
        rows,
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        depths,
        np.full(len(depths), trees, dtype=np.intp),
        got,
    )
    return bool(np.array_equal(got, np.hstack(wanted)))


def _reference(
    X: npt.NDArray[np.float64],
    feature: npt.NDArray[np.int64],
    missing_left: npt.NDArray[np.bool_],
    threshold: npt.NDArray[np.float64],
    value: npt.NDArray[np.float64],
    depth: int,
) -> npt.NDArray[np.float64]:
    inner = 2**depth - 1
    trees = len(feature) // inner
    out = np.empty((len(X), trees))
    for r, row in enumerate(X.tolist()):
        for t in range(trees):
            at = 0
            for _ in range(depth):
                node = t * inner + at
                x = row[int(feature[node])]
                left = bool(missing_left[node]) if x != x else x <= float(threshold[node])
                at = 2 * at + 1 if left else 2 * at + 2
            out[r, t] = value[t * (inner + 1) + at - inner]
    return out
