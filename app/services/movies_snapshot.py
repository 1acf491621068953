"""Movie search answered from the analytics snapshot: the same filters, order, totals and
cursors as the database path (`app.services.movies_query`), computed with numpy.

Used where the database cannot run the query on indexes (FerretDB v1). The order mirrors
MongoDB's: unknown values sort first ascending and last descending, ties by id ascending.
"""

from __future__ import annotations

import numpy as np

from app.models.movies_api import MovieList, MovieSummary
from app.services.analytics import Snapshot
from app.services.analytics.titles import matching_rows
from app.services.columnar import BoolArray, IndexArray
from app.services.movies_query import (
    INTEGER_SORT_FIELDS,
    SORT_FIELDS,
    PreparedSearch,
    Sort,
    SortValue,
    page_of,
)

# The summary's numeric fields are the sortable ones; `id` has its own column.
INTEGER_FIELDS = sorted(INTEGER_SORT_FIELDS - {"id"})
FLOAT_FIELDS = sorted(SORT_FIELDS - INTEGER_SORT_FIELDS)


def after_mask(snap: Snapshot, sort: Sort, value: SortValue, last_id: int) -> BoolArray:
    """Rows strictly after (value, last_id) in the search order (see `movies_query.after`)."""
    ids = snap.ids
    if sort.field == "id":
        return ids < last_id if sort.descending else ids > last_id
    v = snap.num[sort.field]
    unknown = np.isnan(v)
    if value is None:
        same = unknown & (ids > last_id)
        return same if sort.descending else same | ~unknown
    same = (v == value) & (ids > last_id)
    beyond: BoolArray = (v < value) | unknown if sort.descending else v > value
    result: BoolArray = beyond | same
    return result


def ordered_rows(snap: Snapshot, rows: IndexArray, sort: Sort, needed: int) -> IndexArray:
    """The first `needed` of `rows` in the search order.

    A partition finds the rows that can be among the first `needed` in linear time, and only
    those (ties at the boundary included) are sorted.
    """
    ids = snap.ids[rows]
    if sort.field == "id":
        key = -ids.astype(np.float64) if sort.descending else ids.astype(np.float64)
    else:
        v = snap.num[sort.field][rows]
        # Unknown first ascending, last descending, as MongoDB orders null.
        unknown = np.isnan(v)
        key = np.where(unknown, np.inf, -v) if sort.descending else np.where(unknown, -np.inf, v)
    if needed < rows.size:
        bound = np.partition(key, needed - 1)[needed - 1]
        keep = key <= bound
        rows, ids, key = rows[keep], ids[keep], key[keep]
    return rows[np.lexsort((ids, key))][:needed]


def summary_of(snap: Snapshot, row: int) -> MovieSummary:
    num = snap.num
    fields: dict[str, object] = {}
    for name in INTEGER_FIELDS:
        x = num[name][row]
        fields[name] = None if np.isnan(x) else int(x)
    for name in FLOAT_FIELDS:
        x = num[name][row]
        fields[name] = None if np.isnan(x) else float(x)
    lang = int(snap.language.codes[row])
    genre = snap.genre
    codes = genre.codes[genre.indptr[row] : genre.indptr[row + 1]]
    return MovieSummary.model_validate(
        {
            "id": int(snap.ids[row]),
            "title": snap.titles[row],
            "original_language": snap.language.labels[lang] if lang >= 0 else None,
            "release_date": snap.release_dates[row],
            "genres": [genre.labels[c] for c in codes],
            **fields,
        }
    )


def search_snapshot(snap: Snapshot, search: PreparedSearch) -> MovieList:
    """One page of films from the snapshot (runs in a worker thread; see AnalyticsEngine)."""
    mask = snap.mask(search.filters)
    rows: IndexArray
    if search.needle is None:
        rows = np.flatnonzero(mask)
    else:  # the trigram index narrows the titles to test (app.services.analytics.titles)
        rows = matching_rows(snap.title_index, snap.titles_normalized, mask, search.needle)
    total = int(rows.size)
    if search.after is not None:
        rows = rows[after_mask(snap, search.sort, *search.after)[rows]]
    needed = search.offset + search.limit + 1  # one more tells whether a next page exists
    page = ordered_rows(snap, rows, search.sort, needed)[search.offset :]
    return page_of(search, [summary_of(snap, int(r)) for r in page], total)
