"""Title search over the snapshot with a trigram index, so that a query costs about the same
at a million films as at a thousand.

The index holds, for every byte of every normalized title (UTF-8), the trigram starting
there (the title padded with two NULs, so that its last two bytes start one too), with the
title's row, as one sorted array of `trigram << 32 | row` (trigram: 3 bytes, 24 bits).

* A needle of 3 bytes or more: the intersection of its trigrams' rows, checked against the
  titles with the same substring test as a full scan: the index only narrows the
  candidates, so its answers are those of a scan by construction.
* A needle of 1 or 2 bytes occurs where a trigram starts with it: one contiguous range of
  the array, exact (no check needed).
* A needle holding a NUL (the padding) is answered by a scan.

A substring of a UTF-8 string is a substring of its bytes and vice versa, so byte trigrams
serve any text.

The array survives an incremental refresh: rows are renumbered in ascending order, which
keeps it sorted, and the new titles' trigrams are merged in (`TitleIndex.merge`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.services.columnar import BoolArray, IndexArray

Postings = npt.NDArray[np.uint64]
ROW_BITS = np.uint64(32)
ROW_MASK = np.uint64(0xFFFFFFFF)


def _pairs(titles: Sequence[str], rows: IndexArray) -> Postings:
    """Sorted unique `trigram << 32 | row` of the titles (title i is row rows[i])."""
    if not titles:
        return np.empty(0, dtype=np.uint64)
    encoded = [t.encode() for t in titles]
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    # Two NULs after every title: a trigram starting in a title never reaches the next one.
    buf = np.frombuffer(b"\x00\x00".join(encoded) + b"\x00\x00", dtype=np.uint8)
    b0, b1, b2 = buf[:-2], buf[1:-1], buf[2:]
    valid = b0 != 0  # starts on a byte of a title (a NUL inside one starts nothing)
    key = (
        (b0[valid].astype(np.uint64) << np.uint64(16))
        | (b1[valid].astype(np.uint64) << np.uint64(8))
        | b2[valid].astype(np.uint64)
    )
    row_of_byte = np.repeat(np.asarray(rows, dtype=np.uint64), lens + 2)[:-2]
    pairs = np.sort((key << ROW_BITS) | row_of_byte[valid])
    # A trigram twice in a title: once. (np.unique hashes first, several times slower.)
    first = np.ones(pairs.size, dtype=bool)
    first[1:] = pairs[1:] != pairs[:-1]
    return pairs[first]


def needle_trigrams(needle: str) -> list[int] | None:
    """The distinct byte trigrams of a needle of 3 bytes or more (else None)."""
    data = needle.encode()
    if len(data) < 3 or b"\x00" in data:
        return None
    return sorted(
        {(data[i] << 16) | (data[i + 1] << 8) | data[i + 2] for i in range(len(data) - 2)}
    )


def _prefix_range(data: bytes) -> tuple[int, int] | None:
    """The trigrams [first, last] starting with a 1- or 2-byte needle (else None)."""
    if not 1 <= len(data) <= 2 or b"\x00" in data:
        return None
    low = int.from_bytes(data.ljust(3, b"\x00"), "big")
    return low, low + (1 << (8 * (3 - len(data)))) - 1


@dataclass(frozen=True, slots=True)
class TitleIndex:
    postings: Postings  # sorted `trigram << 32 | row`

    @classmethod
    def build(cls, titles: Sequence[str]) -> TitleIndex:
        return cls(_pairs(titles, np.arange(len(titles), dtype=np.intp)))

    @property
    def nbytes(self) -> int:
        return int(self.postings.nbytes)

    def _range(self, first: int, last: int) -> IndexArray:
        """Rows of the trigrams first..last (a row once per trigram it has)."""
        lo, hi = np.searchsorted(
            self.postings, [np.uint64(first) << ROW_BITS, np.uint64(last + 1) << ROW_BITS]
        )
        return (self.postings[lo:hi] & ROW_MASK).astype(np.intp)

    def rows_of(self, trigram: int) -> IndexArray:
        return self._range(trigram, trigram)

    def candidates(self, needle: str) -> IndexArray | None:
        """Ascending rows whose title holds every trigram of `needle` (a superset of the
        titles containing it); None when the needle is shorter than 3 bytes."""
        trigrams = needle_trigrams(needle)
        if trigrams is None:
            return None
        lists = sorted((self.rows_of(t) for t in trigrams), key=len)
        rows = lists[0]
        for other in lists[1:]:
            if rows.size == 0:
                break
            if other.size == 0:
                return other
            at = np.minimum(np.searchsorted(other, rows), other.size - 1)
            rows = rows[other[at] == rows]
        return rows

    def short_matches(self, needle: str, mask: BoolArray) -> IndexArray | None:
        """Ascending rows allowed by `mask` whose title contains a 1- or 2-byte `needle`
        (exact); None for other needles."""
        bounds = _prefix_range(needle.encode())
        if bounds is None:
            return None
        hit = np.zeros(mask.size, dtype=bool)
        hit[self._range(*bounds)] = True
        return np.flatnonzero(hit & mask)

    def merge(
        self,
        kept: BoolArray,
        renumber: IndexArray,
        new_rows: IndexArray,
        new_titles: Sequence[str],
    ) -> TitleIndex:
        """The index after an incremental refresh: old row r survives as `renumber[r]` when
        `kept[r]` (renumbering ascends, so the array stays sorted), and `new_titles` are
        indexed at `new_rows`."""
        rows = (self.postings & ROW_MASK).astype(np.intp)
        stay = kept[rows]
        postings = (self.postings[stay] & ~ROW_MASK) | renumber[rows[stay]].astype(np.uint64)
        added = _pairs(new_titles, new_rows)
        return TitleIndex(np.insert(postings, np.searchsorted(postings, added), added))


def scan_mask(titles: Sequence[str], rows: IndexArray, needle: str) -> BoolArray:
    """Which of `rows` have `needle` in their title, by testing every one.

    Python's substring search beats numpy's string ufuncs here (measured at 1M titles:
    70 ms vs 100 ms); what costs is indexing a list by numpy integers, hence plain lists.
    """
    candidates = titles if rows.size == len(titles) else [titles[r] for r in rows.tolist()]
    found = map(str.__contains__, candidates, itertools.repeat(needle))
    return np.fromiter(found, dtype=bool, count=rows.size)


def matching_rows(
    index: TitleIndex, titles: Sequence[str], mask: BoolArray, needle: str
) -> IndexArray:
    """The rows allowed by `mask` whose title contains `needle`, ascending."""
    short = index.short_matches(needle, mask)
    if short is not None:
        return short
    candidates = index.candidates(needle)
    if candidates is None:
        rows = np.flatnonzero(mask)
        return rows[scan_mask(titles, rows, needle)]
    candidates = candidates[mask[candidates]]
    return candidates[scan_mask(titles, candidates, needle)]
