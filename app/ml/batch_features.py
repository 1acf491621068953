"""`FilmFeatures.transform` for batches, column by column instead of film by film.

`FilmFeatures._transform` (the code training ran, and the code a pickled pipeline runs under
`mlflow models serve`) fills one Python list per film: ~50 us a film, most of a 1,000-film
request. `BatchFeatures` computes the same matrix from the same fitted state with a few
passes over the batch: plain columns gathered once, multi-hot cells set by fancy indexing,
and the people/company track records looked up for every (film, name) pair at once with one
`searchsorted` over a table that orders every name's films by date.

It is an optimisation only, like the compiled trees (`fastpath`): the registry checks it
against `FilmFeatures.transform` on sample films when a model loads (`verified`) and falls
back to the reference when they differ. Every arithmetic step runs in the reference's order
(sums in name order, `math.log1p`), so the two agree bit for bit, NaNs included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from itertools import chain, repeat
from typing import Any

import numpy as np
import numpy.typing as npt

from app.ml.features import (
    _SEQUEL_CUE,
    FAR_FUTURE,
    LEAD_ACTORS,
    TRACK_KINDS,
    TRACK_STATS,
    FilmFeatures,
    TrackRecord,
    _key,
    money,
)
from app.ml.prerelease import (
    ADAPTATION_KEYWORDS,
    FRANCHISE_COLUMNS,
    SEQUEL_KEYWORDS,
    FranchiseIndex,
    PreReleaseFeatures,
    title_parts,
)

FloatMatrix = npt.NDArray[np.float64]
IntVector = npt.NDArray[np.int64]
NAN = float("nan")
# Release ordinals stay below 2**22 (9999-12-31 is 3,652,059): a name's rank shifted past
# them orders (name, date) pairs in one int64 key.
DAY_BITS = 22
# Below this many films the reference loop is cheaper than numpy's per-call overhead.
MIN_ROWS = 8
KEY_CACHE_MAX = 200_000  # names remembered per track table, then forgotten at once


class _Track:
    """One `TrackRecord` as numpy arrays plus the (name rank, date) key of each entry."""

    def __init__(self, table: TrackRecord) -> None:
        self.rank: dict[str, int] = {}
        self.start: list[int] = []
        keys = np.empty(len(table.dates), dtype=np.int64)
        dates = np.asarray(table.dates, dtype=np.int64)
        for rank, (name, (start, end)) in enumerate(
            sorted(table.index.items(), key=lambda item: item[1][0])
        ):
            self.rank[name] = rank
            self.start.append(start)
            keys[start:end] = (rank << DAY_BITS) + dates[start:end]
        self.keys = keys
        self.films = np.asarray(table.films, dtype=np.float64)
        self.n_rev = np.asarray(table.n_rev, dtype=np.int64)
        self.sum_rev = np.asarray(table.sum_rev, dtype=np.float64)
        self.max_rev = np.asarray(table.max_rev, dtype=np.float64)
        self.n_hit_known = np.asarray(table.n_hit_known, dtype=np.int64)
        self.n_hit = np.asarray(table.n_hit, dtype=np.float64)
        self.sum_roi = np.asarray(table.sum_roi, dtype=np.float64)
        self.start_of = np.asarray(self.start, dtype=np.int64)
        self.ranks_of: dict[str, int] = {}

    def before(self, names: Sequence[Sequence[str]], days: IntVector) -> FloatMatrix:
        """`TrackRecord.before` for every film: (n, 5) stats over each film's names."""
        n = len(names)
        # The same people and studios come back request after request: a name's normalized
        # key is looked up once (-1: no track record).
        rank = self.rank
        found = _looked_up(
            self.ranks_of, list(chain.from_iterable(names)), lambda name: rank.get(_key(name), -1)
        )
        owner_all = np.repeat(np.arange(n, dtype=np.intp), [len(v) for v in names])
        rank_all = np.asarray(found, dtype=np.int64)
        known = rank_all >= 0
        out = np.empty((n, len(TRACK_STATS)), dtype=np.float64)
        out[:, 0] = 0.0
        out[:, 1:] = NAN
        if not known.any():
            return out
        owner = owner_all[known]
        rank_arr = rank_all[known]
        query = (rank_arr << DAY_BITS) + days[owner]
        k = np.searchsorted(self.keys, query, side="left") - 1
        seen = k >= self.start_of[rank_arr]  # some film of that name came strictly before
        owner, k = owner[seen], k[seen]
        if not len(k):
            return out
        # Sequential sums in the reference's order (bincount adds in input order).
        films = np.bincount(owner, weights=self.films[k], minlength=n)
        n_hk = np.bincount(owner, weights=self.n_hit_known[k], minlength=n)
        n_hit = np.bincount(owner, weights=self.n_hit[k], minlength=n)
        roi = np.bincount(owner, weights=self.sum_roi[k], minlength=n)
        earned = self.n_rev[k] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            means = self.sum_rev[k[earned]] / self.n_rev[k[earned]]
            by = owner[earned]
            count = np.bincount(by, minlength=n)
            mean = np.bincount(by, weights=means, minlength=n) / count
            best = np.full(n, -np.inf)
            np.maximum.at(best, by, self.max_rev[k[earned]])
            out[:, 0] = films
            out[:, 1] = np.where(count > 0, mean, NAN)
            out[:, 2] = np.where(count > 0, best, NAN)
            out[:, 3] = np.where(n_hk > 0, n_hit / n_hk, NAN)
            out[:, 4] = np.where(n_hk > 0, roi / n_hk, NAN)
        return out


class _Franchise:
    """`PreReleaseFeatures`' franchise columns for a batch. Keyword cues and company and
    director keys are looked up for every film's names at once, each name worked out once
    across requests (names come back request after request); titles and the franchise
    index still go film by film (`title_parts`, `FranchiseIndex.before_keys`)."""

    SEQUEL, ADAPTATION = 1, 2  # bits of a keyword's cue

    def __init__(self, features: PreReleaseFeatures) -> None:
        self.index: FranchiseIndex | None = features.franchise_index_
        self.column = features._pos["title_number"]
        self.keys: dict[str, str] = {}  # name -> `_key(name)`
        self.cues: dict[str, int] = {}  # keyword -> SEQUEL | ADAPTATION bits

    def _cue(self, keyword: str) -> int:
        folded = keyword.casefold()
        sequel = folded in SEQUEL_KEYWORDS
        adaptation = folded in ADAPTATION_KEYWORDS or folded.startswith("based on")
        return self.SEQUEL * sequel + self.ADAPTATION * adaptation

    def fill(self, out: FloatMatrix, records: Sequence[Mapping[str, Any]], days: list[int]) -> None:
        n = len(records)
        block = np.empty((n, FRANCHISE_COLUMNS), dtype=np.float64)
        parts = list(map(title_parts, [r["title"] for r in records]))
        block[:, 0] = [float(p.number or 0) for p in parts]
        block[:, 1] = [p.subtitle for p in parts]
        keywords = [r["keywords"] for r in records]
        cues = _looked_up(self.cues, list(chain.from_iterable(keywords)), self._cue)
        if cues:
            owner = np.repeat(np.arange(n, dtype=np.intp), [len(k) for k in keywords])
            bits = np.asarray(cues, dtype=np.intp)
            block[:, 2] = np.bincount(owner, weights=bits & self.SEQUEL, minlength=n) > 0
            block[:, 3] = np.bincount(owner, weights=bits & self.ADAPTATION, minlength=n) > 0
        else:
            block[:, 2:4] = 0.0
        index = self.index
        if index is None:
            block[:, 4] = 0.0
            block[:, 5:] = NAN
        else:
            # The names `PreReleaseFeatures` searches: the film's companies, then directors.
            names = [[*r["production_companies"], *r["directors"]] for r in records]
            keys = _looked_up(self.keys, list(chain.from_iterable(names)), _key)
            no_prior = (0.0, NAN, NAN, NAN)
            prior: list[tuple[float, float, float, float]] = []
            end = 0
            for part, own, day in zip(parts, names, days, strict=True):
                start, end = end, end + len(own)
                prior.append(
                    index.before_keys(keys[start:end], day, part.stem) if part.stem else no_prior
                )
            block[:, 4:] = prior
        out[:, self.column : self.column + FRANCHISE_COLUMNS] = block


def _looked_up(cache: dict[str, Any], names: list[str], work: Any) -> list[Any]:
    """`work(name)` for every name, from `cache` where it was worked out before (a cache
    past KEY_CACHE_MAX names is forgotten at once)."""
    if len(cache) > KEY_CACHE_MAX:
        cache.clear()
    found = list(map(cache.get, names))
    if None in found:
        for at, value in enumerate(found):
            if value is None:
                found[at] = cache[names[at]] = work(names[at])
    return found


class BatchFeatures:
    """`features.transform(records)` for a batch of canonical records (see `film_record`)."""

    def __init__(self, features: FilmFeatures) -> None:
        self.features = features
        pos = features._pos
        self.width = len(features.feature_names_)
        self.pos = pos
        self.multi = (
            ("genres", features._pos_genre, pos["n_genres"]),
            ("production_companies", features._pos_company, pos["n_companies"]),
            ("production_countries", features._pos_country, pos["n_countries"]),
            ("spoken_languages", features._pos_spoken, pos["n_spoken_languages"]),
            ("keywords", features._pos_keyword, pos["n_keywords"]),
        )
        self.tracks = [_Track(features.tracks_[k]) for k in TRACK_KINDS]
        self.all_missing = np.asarray(features.all_missing_, dtype=np.intp)
        self.franchise = (
            _Franchise(features)
            if isinstance(features, PreReleaseFeatures) and features.franchise
            else None
        )

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> FloatMatrix:
        if len(records) < MIN_ROWS:
            return self.features.transform(list(records))
        return self.transform(records)

    def transform(self, records: Sequence[Mapping[str, Any]]) -> FloatMatrix:
        """The feature matrix of canonical records as `film_record` makes them: every key
        present, flags as booleans, numbers as floats or None, lists of clean names (which
        `_str_list` returns as they are). Per-item work runs in C (`map`, `chain`) and
        numpy; Python loops only over films."""
        n, pos = len(records), self.pos
        out = np.zeros((n, self.width), dtype=np.float64)

        budgets = [money(r["budget"]) for r in records]
        log_budget = np.array([NAN if b is None else math.log1p(b) for b in budgets])
        out[:, pos["log_budget"]] = log_budget
        out[:, pos["budget_known"]] = [b is not None for b in budgets]
        out[:, pos["runtime"]] = [v if v else NAN for v in (r["runtime"] for r in records)]

        days = [FAR_FUTURE] * n
        parts: list[tuple[float, float, float, float]] = [(NAN, NAN, NAN, NAN)] * n
        for i, released in enumerate(r["release_date"] for r in records):
            if released:
                d = date.fromisoformat(released[:10])
                day = days[i] = d.toordinal()
                parts[i] = (d.year, d.month, d.weekday(), day - date(d.year, 1, 1).toordinal() + 1)
        i_year = pos["release_year"]
        out[:, i_year : i_year + 4] = parts
        day_arr = np.asarray(days, dtype=np.int64)

        lists: dict[str, list[Any]] = {}
        for field, vocab, count_col in self.multi:
            values = [r[field] for r in records]
            lists[field] = values
            counts = [len(v) for v in values]
            out[:, count_col] = counts
            flat = list(chain.from_iterable(values))
            if flat:
                cols = np.fromiter(
                    map(vocab.get, flat, repeat(-1, len(flat))), dtype=np.intp, count=len(flat)
                )
                rows = np.repeat(np.arange(n, dtype=np.intp), counts)
                hit = cols >= 0
                out[rows[hit], cols[hit]] = 1.0
        languages = self.features._pos_lang
        lang_cols = [languages.get(lang, -1) for lang in (r["original_language"] for r in records)]
        lang_rows = [i for i, j in enumerate(lang_cols) if j >= 0]
        if lang_rows:
            out[lang_rows, [lang_cols[i] for i in lang_rows]] = 1.0

        for name, column in (
            ("homepage", "has_homepage"),
            ("tagline", "has_tagline"),
            ("belongs_to_collection", "in_collection"),
        ):
            out[:, pos[column]] = [r[name] for r in records]
        search = _SEQUEL_CUE.search
        out[:, pos["title_sequel_cue"]] = [
            bool(t) and search(t) is not None for t in (r["title"] for r in records)
        ]
        directors = [r["directors"] for r in records]
        actors = [r["actors"][:LEAD_ACTORS] for r in records]
        out[:, pos["n_directors"]] = [len(v) for v in directors]
        out[:, pos["n_lead_actors"]] = [len(v) for v in actors]

        j = pos["director_prior_films"]
        n_stats = len(TRACK_STATS)
        for track, names in zip(
            self.tracks, (directors, actors, lists["production_companies"]), strict=True
        ):
            stats = track.before(names, day_arr)
            out[:, j : j + n_stats] = stats
            out[:, j + n_stats] = stats[:, 1] - log_budget  # NaN-propagating
            j += n_stats + 1
        if len(self.all_missing):
            out[:, self.all_missing] = 0.0
        if isinstance(self.features, PreReleaseFeatures):
            # Schema 2: the franchise columns here, its other columns (text, release
            # context...) from its own code, film by film, over the schema-1 columns above.
            if self.franchise is not None:
                self.franchise.fill(out, records, days)
            self.features.fill_extras(
                out, records, None, None, franchise_done=self.franchise is not None
            )
        return out


def verified(batch: BatchFeatures, records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the batch transform reproduces `FilmFeatures.transform` on these records
    exactly (NaN where it has NaN)."""
    try:
        fast = batch.transform(records)
    except (KeyError, ValueError, TypeError, IndexError):
        return False
    reference = batch.features.transform(list(records))
    return bool(np.array_equal(fast, reference, equal_nan=True))
