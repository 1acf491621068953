"""An incremental refresh: a snapshot with some films replaced, added or removed, made from
the previous one and those films alone, never from a full read.

Every changed film's row is dropped and the films still stored are inserted at their place
in id order: one `np.insert` per column, O(catalogue) array work but no database reads and no
sorting of the catalogue. What needs care is keeping the result canonical (what a full read
would build, array for array; `app.services.analytics.snapshot`):

* value orders: the surviving rows keep their order under the renumbering (which ascends),
  the new rows are placed by (value, row) with a binary search;
* labels stay ascending: new ones are merged in (old codes shift by how many new labels sort
  before them), and labels no film uses any more are dropped;
* the title index is renumbered and merged the same way (`TitleIndex.merge`).

`tests/test_snapshot_incremental.py` checks incremental against full after random write
sequences.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from app.services.analytics.snapshot import (
    NUMERIC_FIELDS,
    Lineage,
    MultiDim,
    SingleDim,
    Snapshot,
    SnapshotBuilder,
    assemble,
)
from app.services.columnar import BoolArray, FloatArray, IndexArray


def merge_labels(labels: list[str], incoming: Iterable[str]) -> tuple[list[str], IndexArray | None]:
    """Ascending `labels` with the `incoming` ones they lack merged in, and where each old
    code went (None: nowhere, no label was new)."""
    fresh: set[str] = set()
    for label in incoming:
        i = bisect.bisect_left(labels, label)
        if i == len(labels) or labels[i] != label:
            fresh.add(label)
    if not fresh:
        return labels, None
    ordered = sorted(fresh)
    at = [bisect.bisect_left(labels, x) for x in ordered]
    merged: list[str] = []
    prev = 0
    for a, label in zip(at, ordered, strict=True):
        merged += labels[prev:a]
        merged.append(label)
        prev = a
    merged += labels[prev:]
    old = np.arange(len(labels), dtype=np.int64)
    return merged, old + np.searchsorted(np.asarray(at, dtype=np.int64), old, side="right")


def compact(labels: list[str], codes: IndexArray) -> tuple[list[str], IndexArray]:
    """Drop the labels no code uses (codes -1: no label), renumbering the codes."""
    used = np.bincount(codes[codes >= 0], minlength=len(labels)) > 0
    if used.all():
        return labels, codes
    # The last slot maps code -1 (no label) to itself.
    renumber = np.append(np.cumsum(used) - 1, -1)
    kept = np.asarray(labels, dtype=object)[used].tolist()
    return kept, renumber[codes]


def _codes_of(labels: list[str], values: Sequence[str | None]) -> npt.NDArray[np.int64]:
    """Codes of values known to be in ascending `labels` (None: -1)."""
    memo: dict[str, int] = {}
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = -1
            continue
        code = memo.get(value)
        if code is None:
            code = memo[value] = bisect.bisect_left(labels, value)
        out[i] = code
    return out


def merge_single(
    dim: SingleDim, kept: BoolArray, at: IndexArray, new: Sequence[str | None]
) -> SingleDim:
    codes: IndexArray = dim.codes[kept].astype(np.int64)
    labels, moved = merge_labels(dim.labels, (x for x in new if x is not None))
    if moved is not None:
        codes = np.append(moved, -1)[codes]  # code -1 (no label) stays -1
    codes = np.insert(codes, at, _codes_of(labels, new))
    labels, codes = compact(labels, codes)
    return SingleDim(codes=codes.astype(np.int32), labels=labels)


def merge_multi(
    dim: MultiDim, kept: BoolArray, at: IndexArray, new: Sequence[list[str]]
) -> MultiDim:
    """The compressed rows with the rows not `kept` dropped and `new[j]` inserted before
    the `at[j]`-th kept row."""
    lens = np.diff(dim.indptr)[kept]
    codes: IndexArray = dim.codes[kept[dim.rows]].astype(np.int64)
    flat = list(itertools.chain.from_iterable(new))
    labels, moved = merge_labels(dim.labels, flat)
    if moved is not None:
        codes = moved[codes]
    new_lens = np.fromiter(map(len, new), dtype=np.int64, count=len(new))
    starts = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=starts[1:])
    codes = np.insert(codes, np.repeat(starts[at], new_lens), _codes_of(labels, flat))
    lens = np.insert(lens, at, new_lens)
    labels, codes = compact(labels, codes)
    indptr = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    return MultiDim(
        indptr=indptr,
        codes=codes.astype(np.int32),
        rows=np.repeat(np.arange(lens.size, dtype=np.int32), lens),
        labels=labels,
    )


def merge_order(
    order: IndexArray,
    kept: BoolArray,
    renumber: IndexArray,
    values: FloatArray,
    new_rows: IndexArray,
) -> IndexArray:
    """Rows with a known value ascending by (value, row), from the old order (rows renumbered,
    dropped ones left out) and the new rows; `values` is the new column."""
    rows = renumber[order[kept[order]]]
    new_values = values[new_rows]
    known = ~np.isnan(new_values)
    add, add_values = new_rows[known], new_values[known]
    by = np.lexsort((add, add_values))
    add, add_values = add[by], add_values[by]
    current = values[rows]
    at = np.searchsorted(current, add_values, side="left")
    tie = np.flatnonzero(np.searchsorted(current, add_values, side="right") > at)
    if tie.size:
        # Within a run of equal values the rows ascend: number the runs, and search the
        # (run, row) keys, which ascend through the whole order.
        run = np.cumsum(np.concatenate(([True], current[1:] != current[:-1]))).astype(np.int64)
        width = np.int64(values.size + 1)
        keys = run * width + rows
        at[tie] = np.searchsorted(keys, run[at[tie]] * width + add[tie])
    return np.insert(rows, at, add).astype(np.int32)


def apply_changes(
    base: Snapshot,
    changed: Iterable[int],
    docs: Iterable[Mapping[str, Any]],
    *,
    version: int,
    build_id: int,
    lineage: Lineage,
) -> Snapshot:
    """`base` with the films `changed` replaced by `docs` (projected as the snapshot reads
    them; a changed film without a document is gone from the catalogue)."""
    started = time.perf_counter()
    changed_ids = np.unique(np.fromiter(changed, dtype=np.int64))
    wanted = set(changed_ids.tolist())
    builder = SnapshotBuilder()
    builder.add(d for d in docs if d.get("id") in wanted)
    new = builder.finish(version, build_id, started)  # the changed films, canonical
    kept = ~np.isin(base.ids, changed_ids)
    kept_ids = base.ids[kept]
    at = np.searchsorted(kept_ids, new.ids)  # before which kept row each new row goes
    new_rows = at + np.arange(new.size)  # and the row it becomes
    renumber = np.full(base.size, -1, dtype=np.intp)
    renumber[kept] = np.arange(kept_ids.size) + np.searchsorted(new.ids, kept_ids)

    def strings(old: list[Any], added: list[Any]) -> list[Any]:
        column = np.asarray(old, dtype=object) if old else np.empty(0, dtype=object)
        values = np.empty(len(added), dtype=object)
        values[:] = added
        result: list[Any] = np.insert(column[kept], at, values).tolist()
        return result

    num = {f: np.insert(base.num[f][kept], at, new.num[f]) for f in NUMERIC_FIELDS}

    def orders() -> dict[str, IndexArray]:
        return {
            f: merge_order(base.order[f], kept, renumber, num[f], new_rows) for f in NUMERIC_FIELDS
        }

    # The title index and the value orders (half the work at a million films) are merged in
    # a second thread meanwhile: numpy releases the GIL for these array passes.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-merge") as helper:
        title_index = helper.submit(
            base.title_index.merge, kept, renumber, new_rows, new.titles_normalized
        )
        merged_orders = helper.submit(orders)
        dims = {
            name: merge_multi(getattr(base, name), kept, at, _lists(getattr(new, name)))
            for name in ("genre", "company", "director", "actor", "keyword")
        }
        language = merge_single(base.language, kept, at, builder_languages(new))
        titles = strings(base.titles, new.titles)
        titles_normalized = strings(base.titles_normalized, new.titles_normalized)
        release_dates = strings(base.release_dates, new.release_dates)
        return assemble(
            version=version,
            build_id=build_id,
            started=started,
            ids=np.insert(kept_ids, at, new.ids),
            titles=titles,
            titles_normalized=titles_normalized,
            release_dates=release_dates,
            num=num,
            order=merged_orders.result(),
            language=language,
            genre=dims["genre"],
            company=dims["company"],
            director=dims["director"],
            actor=dims["actor"],
            keyword=dims["keyword"],
            title_index=title_index.result(),
            lineage=lineage,
        )


def builder_languages(snap: Snapshot) -> list[str | None]:
    """Each row's language label (None: unknown)."""
    labels = snap.language.labels
    return [labels[c] if c >= 0 else None for c in snap.language.codes.tolist()]


def _lists(dim: MultiDim) -> list[list[str]]:
    """Each row's labels, in stored order."""
    labels = dim.labels
    codes = dim.codes.tolist()
    bounds = dim.indptr.tolist()
    return [[labels[c] for c in codes[a:b]] for a, b in itertools.pairwise(bounds)]
