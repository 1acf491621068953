"""Title search through the trigram index gives exactly the answers of the scan it replaced
(every title tested for the needle), on the 3,804 real films, for many needles: substrings
of real titles of every length (across word boundaries too), whole titles, needles found
nowhere, short ones (answered by the scan), with and without filters; and a sample agrees
with the database's own `$regex` search."""

from __future__ import annotations

import random

import numpy as np
import pytest

from app.models.movies_api import MovieList
from app.services.analytics import Snapshot, load_snapshot
from app.services.analytics.titles import TitleIndex, matching_rows, needle_trigrams, scan_mask
from app.services.filters import CatalogFilter
from app.services.movies_query import (
    MovieQuery,
    PreparedSearch,
    page_of,
    prepare,
    search_movies,
)
from app.services.movies_snapshot import after_mask, ordered_rows, search_snapshot, summary_of
from tests.analytics_support import Catalogue

KEY = b"title-index-tests"


@pytest.fixture(scope="module")
async def snap(catalogue: Catalogue) -> Snapshot:
    return await load_snapshot(catalogue.db)


def needles(snap: Snapshot, count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    titles = [t for t in snap.titles_normalized if t]
    out = {"a", "zz", "the", "love", "2", " ", "man", "qqqx", "star wars", "the the"}
    while len(out) < count:
        title = rng.choice(titles)
        length = rng.randint(1, min(14, len(title)))
        start = rng.randint(0, len(title) - length)
        out.add(title[start : start + length])
    out.update(rng.sample(titles, 20))  # whole titles
    return sorted(out)


def scanned_search(snap: Snapshot, search: PreparedSearch) -> MovieList:
    """`/v1/movies` from the snapshot as it was before the index: every title tested."""
    rows = np.flatnonzero(snap.mask(search.filters))
    if search.needle is not None:
        rows = rows[scan_mask(snap.titles_normalized, rows, search.needle)]
    total = int(rows.size)
    if search.after is not None:
        rows = rows[after_mask(snap, search.sort, *search.after)[rows]]
    page = ordered_rows(snap, rows, search.sort, search.offset + search.limit + 1)
    return page_of(search, [summary_of(snap, int(r)) for r in page[search.offset :]], total)


def test_the_index_finds_what_the_scan_finds(snap: Snapshot) -> None:
    everything = np.ones(snap.size, dtype=bool)
    drama = snap.mask(CatalogFilter(genres=("Drama",), year_from=1990))
    every_row = np.arange(snap.size)
    indexed = 0
    for needle in needles(snap, 600):
        indexed += needle_trigrams(needle) is not None
        for mask in (everything, drama):
            scan = np.flatnonzero(mask)
            scan = scan[scan_mask(snap.titles_normalized, scan, needle)]
            got = matching_rows(snap.title_index, snap.titles_normalized, mask, needle)
            assert np.array_equal(got, scan), needle
        if needle_trigrams(needle) is not None:  # the index narrows, never misses
            candidates = snap.title_index.candidates(needle)
            assert candidates is not None
            hits = every_row[scan_mask(snap.titles_normalized, every_row, needle)]
            assert np.isin(hits, candidates).all(), needle
    assert indexed > 400


@pytest.mark.parametrize("sort", ["-popularity", "-vote_count", "id", "-revenue"])
def test_search_pages_are_those_of_the_scan(snap: Snapshot, sort: str) -> None:
    for q in ["love", "The", "Star", "man", "ii", "2", "Amélie", "Harry Potter", "of the"]:
        for filters in (CatalogFilter(), CatalogFilter(year_from=2000, min_votes=10)):
            query = MovieQuery(filters=filters, q=q, sort=sort, limit=7)
            search = prepare(query, KEY)
            first = search_snapshot(snap, search)
            assert first == scanned_search(snap, search), (q, filters)
            if first.next_cursor:  # and the next page, by cursor
                cursor = first.next_cursor
                query = MovieQuery(filters=filters, q=q, sort=sort, limit=7, cursor=cursor)
                search = prepare(query, KEY)
                assert search_snapshot(snap, search) == scanned_search(snap, search)


async def test_the_database_agrees(snap: Snapshot, catalogue: Catalogue) -> None:
    """The `$regex` search MongoDB runs (slow on FerretDB: a few needles only)."""
    for q in ["love", "the dark", "ii"]:
        search = prepare(MovieQuery(filters=CatalogFilter(), q=q, sort="id", limit=100), KEY)
        database = await search_movies(catalogue.db, search)
        ours = search_snapshot(snap, search)
        assert ours.total == database.total > 0
        assert [m.id for m in ours.items] == [m.id for m in database.items]


def test_index_build_and_merge_keep_rows_sorted() -> None:
    titles = ["star wars", "a new hope", "", "wars\x00star", "star"]
    index = TitleIndex.build(titles)
    assert np.all(index.postings[1:] > index.postings[:-1])
    star = index.candidates("star")
    assert star is not None and star.tolist() == [0, 3, 4]
    # 1- and 2-byte needles come from one range of the index, exactly (last bytes too).
    everything = np.ones(len(titles), dtype=bool)
    for needle, rows in [("r", [0, 3, 4]), ("rs", [0, 3]), ("e", [1]), ("pe", [1]), ("x", [])]:
        found = index.short_matches(needle, everything)
        assert found is not None and found.tolist() == rows, needle
    assert index.short_matches("\x00", everything) is None
    # Row 1 dropped, rows renumbered, a title added at row 1.
    kept = np.array([True, False, True, True, True])
    renumber = np.array([0, -1, 2, 3, 4])
    merged = index.merge(kept, renumber, np.array([1]), ["starlight"])
    want = TitleIndex.build(["star wars", "starlight", "", "wars\x00star", "star"])
    assert np.array_equal(merged.postings, want.postings)
