"""Feature schema 2: `FilmFeatures` plus four groups of pre-release signal, each switchable so
that training can keep only the groups that improve validation (the ablation in the card):

- **text** (`text_components > 0`): overview, tagline and keywords as TF-IDF, reduced with a
  truncated SVD, all fitted inside the pipeline on the training films' text (no outcome is
  read, nothing is downloaded);
- **franchise**: the number in the title (`2`, `III`, `Part 4`), a subtitle, sequel and
  adaptation keywords, and the *earlier* films with the same title stem made by the same
  company or director: how many, the best and the most recent one's revenue, how long ago;
- **release context**: how many big-budget films open within three days and in the same month
  (from the release calendar: dates and budgets, facts announced before release, never
  outcomes), and the distance to the next US holiday weekend;
- **constant dollars**: the budget in dollars of the CPI table's last year, track records in
  constant dollars, and the log price level of the release year as the *last* column, which
  `app.ml.estimators.ConstantDollarRegressor` uses to learn revenue in constant dollars and
  convert it back.

Leakage rules, as in `FilmFeatures`: a film's own outcome is never an input, franchise and
track-record facts come only from films released strictly before it, and the calendar holds
release dates and budgets only. Pickled by trained pipelines: the module stays in `app`.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from itertools import repeat
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from app.ml import cpi
from app.ml.features import (
    FAR_FUTURE,
    NAN,
    TRACK_KINDS,
    FilmFeatures,
    FloatMatrix,
    TrackRecord,
    _key,
    _missing,
    _str_list,
    as_records,
    money,
)

SCHEMA_VERSION = 2
# A "big-budget" film for the release context, in constant (base-year) dollars.
BIG_BUDGET = 60_000_000.0
SAME_WEEK_DAYS = 3
SEQUEL_KEYWORDS = frozenset({"sequel", "prequel", "spin off", "reboot", "remake", "part"})
ADAPTATION_KEYWORDS = frozenset(
    {"superhero", "marvel comic", "dc comics", "marvel cinematic universe"}
)
# The franchise group's columns, side by side in this order (`title_number` first).
FRANCHISE_FEATURES = (
    ("title_number", "count"),
    ("title_has_subtitle", "binary"),
    ("sequel_keyword", "binary"),
    ("adaptation_keyword", "binary"),
    ("franchise_prior_films", "count"),
    ("franchise_prior_best_log_revenue", "numeric"),
    ("franchise_prior_last_log_revenue", "numeric"),
    ("franchise_years_since_last", "numeric"),
)
FRANCHISE_COLUMNS = len(FRANCHISE_FEATURES)
# US certification (MPAA) as TMDB and IMDB spell it; unknown ratings leave every column 0.
RATINGS = ("G", "PG", "PG-13", "R", "NC-17", "unrated")
RATING_ALIASES = {
    "G": "G",
    "TV-G": "G",
    "PG": "PG",
    "GP": "PG",
    "TV-PG": "PG",
    "PG-13": "PG-13",
    "TV-14": "PG-13",
    "R": "R",
    "M": "R",
    "NC-17": "NC-17",
    "X": "NC-17",
    "NR": "unrated",
    "NOT RATED": "unrated",
    "UNRATED": "unrated",
}
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SPLIT = re.compile("\\s*(?::|\\s[-\u2013\u2014]\\s)\\s*")
_ROMAN = {
    "ii": 2, "iii": 3, "iv": 4, "vi": 6, "vii": 7, "viii": 8, "ix": 9,
    "xi": 11, "xii": 12, "xiii": 13,
}  # fmt: skip
_ROMAN_AFTER_MARKER = {**_ROMAN, "v": 5, "x": 10}
_MARKERS = frozenset({"part", "chapter", "episode", "vol", "volume"})
_ARTICLES = frozenset({"the", "a", "an"})


# --- titles -----------------------------------------------------------------------------------


def _number(token: str, after_marker: bool) -> int | None:
    if token.isascii() and token.isdigit():
        n = int(token)
        return n if 2 <= n <= 20 else None
    if token.endswith("d") and token[:-1].isascii() and token[:-1].isdigit():  # "Step Up 3D"
        n = int(token[:-1])
        return n if 2 <= n <= 20 else None
    return (_ROMAN_AFTER_MARKER if after_marker else _ROMAN).get(token)


@dataclass(frozen=True, slots=True)
class TitleParts:
    stem: tuple[str, ...]  # lower-case words of the main title, number and article removed
    number: int | None  # 2 for "Iron Man 2", 3 for "Rocky III", None for a first film
    subtitle: bool  # "Pirates of the Caribbean: Dead Man's Chest"


def title_parts(title: str | None) -> TitleParts:
    """The franchise-relevant parts of a title (pure function of the title)."""
    text = " ".join(str(title or "").casefold().split())
    pieces = _SPLIT.split(text, maxsplit=1)
    main, subtitle = pieces[0], len(pieces) > 1 and bool(pieces[1])
    words = _WORD.findall(main)
    number = None
    if len(words) >= 2:
        marker = len(words) >= 3 and words[-2] in _MARKERS
        n = _number(words[-1], marker)
        if n is not None:
            number = n
            words = words[:-2] if marker else words[:-1]
    if number is None and subtitle:  # "Star Wars: Episode V", "Saw: Part 2"
        sub = _WORD.findall(pieces[1])
        if len(sub) >= 2 and sub[0] in _MARKERS:
            number = _number(sub[1], True)
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return TitleParts(tuple(words), number, subtitle)


def same_franchise(earlier: tuple[str, ...], later: tuple[str, ...]) -> bool:
    """The earlier film's stem is the later film's, or starts it ("Rocky" -> "Rocky Balboa",
    "The Dark Knight" -> "The Dark Knight Rises"); a one-word prefix must be a real word."""
    if not earlier or len(earlier) > len(later) or later[: len(earlier)] != earlier:
        return False
    return len(earlier) == len(later) or len(earlier) >= 2 or len(earlier[0]) >= 4


# --- franchise index ----------------------------------------------------------------------------


@dataclass
class FranchiseIndex:
    """Every dated training film under (company or director, first stem word), sorted by date.
    Entries: (day, film number, stem, log revenue or None)."""

    entries: dict[tuple[str, str], list[tuple[int, int, tuple[str, ...], float | None]]] = field(
        default_factory=dict
    )

    def add(
        self,
        names: Sequence[str],
        day: int,
        film: int,
        stem: tuple[str, ...],
        log_rev: float | None,
    ) -> None:
        if not stem:
            return
        for name in names:
            self.entries.setdefault((_key(name), stem[0]), []).append((day, film, stem, log_rev))

    def freeze(self) -> None:
        for rows in self.entries.values():
            rows.sort(key=lambda r: (r[0], r[1]))

    def before(
        self, names: Sequence[str], day: int, stem: tuple[str, ...]
    ) -> tuple[float, float, float, float]:
        """(earlier films of the franchise, best log revenue, most recent one's log revenue,
        years since the most recent one), over films released strictly before `day` that share
        a company or director; NaN where unknown."""
        return self.before_keys([_key(name) for name in names], day, stem)

    def before_keys(
        self, keys: Sequence[str], day: int, stem: tuple[str, ...]
    ) -> tuple[float, float, float, float]:
        """`before` for names already normalized with `_key` (a batch keys each name once)."""
        if not stem:
            return 0.0, NAN, NAN, NAN
        seen: dict[int, tuple[int, float | None]] = {}
        for key in keys:
            rows = self.entries.get((key, stem[0]))
            if not rows:
                continue
            for r_day, film, r_stem, log_rev in rows:
                if r_day >= day:
                    break
                if film not in seen and same_franchise(r_stem, stem):
                    seen[film] = (r_day, log_rev)
        if not seen:
            return 0.0, NAN, NAN, NAN
        known = [v for _, v in seen.values() if v is not None]
        last_day, last_rev = max(seen.values(), key=lambda dv: dv[0])
        return (
            float(len(seen)),
            max(known) if known else NAN,
            last_rev if last_rev is not None else NAN,
            (day - last_day) / 365.25 if day != FAR_FUTURE else NAN,
        )


# --- release calendar -------------------------------------------------------------------------


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    last = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def us_holidays(year: int) -> list[date]:
    """The US holiday weekends the box office plans around."""
    return [
        date(year, 1, 1),
        _nth_weekday(year, 2, 0, 3),  # Presidents' Day
        _last_weekday(year, 5, 0),  # Memorial Day
        date(year, 7, 4),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        date(year, 12, 25),
    ]


def days_to_holiday(d: date) -> int:
    """Days from `d` to the next holiday on or after it."""
    upcoming = [h for h in us_holidays(d.year) if h >= d]
    if upcoming:
        return (upcoming[0] - d).days
    # After Christmas: the next New Year's Day, counted without building it (the year
    # after 9999, a valid release date, does not exist for `date`).
    return (date(d.year, 12, 31) - d).days + 1


@dataclass
class ReleaseCalendar:
    """Release days of the big-budget films (and of all films) in the schedule, sorted; films
    carry an id so that a film never counts itself."""

    big_days: list[int] = field(default_factory=list)
    big_ids: list[int] = field(default_factory=list)
    all_days: list[int] = field(default_factory=list)
    months: dict[int, list[int]] = field(default_factory=dict)  # year*12+month -> big ids
    day_of: dict[int, int] = field(default_factory=dict)  # film id -> release day
    last_day: int = 0

    @staticmethod
    def month_key(d: date) -> int:
        return d.year * 12 + d.month

    def counts(self, d: date, film_id: int | None) -> tuple[float, float, float]:
        """(big films within SAME_WEEK_DAYS days, big films the same month, all films within
        SAME_WEEK_DAYS days), not counting the film itself; NaN past the calendar's end."""
        day = d.toordinal()
        if day > self.last_day:
            return NAN, NAN, NAN
        lo, hi = day - SAME_WEEK_DAYS, day + SAME_WEEK_DAYS
        a, b = bisect_left(self.big_days, lo), bisect_right(self.big_days, hi)
        week = b - a - sum(1 for i in self.big_ids[a:b] if i == film_id)
        month_ids = self.months.get(self.month_key(d), [])
        month = len(month_ids) - sum(1 for i in month_ids if i == film_id)
        films = bisect_right(self.all_days, hi) - bisect_left(self.all_days, lo)
        own = self.day_of.get(film_id) if film_id is not None else None
        if own is not None and lo <= own <= hi:
            films -= 1
        return float(week), float(month), float(films)


# --- text ---------------------------------------------------------------------------------------


def _keyword_tokens(keywords: str) -> list[str]:
    """Keywords travel as one "|"-joined string; each keyword is one token."""
    return [k for k in keywords.split("|") if k]


def _texts(rec: Mapping[str, Any]) -> tuple[str, str]:
    prose = f"{rec.get('overview') or ''} {rec.get('tagline_text') or ''}".strip()
    keywords = "|".join(k.casefold() for k in _str_list(rec.get("keywords")))
    return prose, keywords


@dataclass
class TextProjection:
    """TF-IDF (sublinear tf, idf, l2 per block) followed by the SVD projection, per token."""

    blocks: list[tuple[Any, dict[str, int], FloatMatrix, FloatMatrix]]  # analyzer, vocab, idf, proj

    @classmethod
    def build(
        cls, prose: TfidfVectorizer, keywords: TfidfVectorizer, components: FloatMatrix
    ) -> TextProjection:
        n_prose = len(prose.vocabulary_)
        blocks = []
        for vectorizer, proj in (
            (prose, components[:, :n_prose].T),
            (keywords, components[:, n_prose:].T),
        ):
            blocks.append(
                (
                    vectorizer.build_analyzer(),
                    dict(vectorizer.vocabulary_),
                    np.asarray(vectorizer.idf_, dtype=np.float64),
                    np.ascontiguousarray(proj, dtype=np.float64),
                )
            )
        return cls(blocks)

    def row(self, prose: str, keywords: str) -> FloatMatrix:
        out = np.zeros(self.blocks[0][3].shape[1] + 1)
        for (analyze, vocab, idf, proj), doc in zip(self.blocks, (prose, keywords), strict=True):
            counts: dict[int, int] = {}
            for token in analyze(doc) if doc else ():
                j = vocab.get(token)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            cols = np.fromiter(counts, dtype=np.intp, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            weight = (np.log(tf) + 1.0) * idf[cols]
            weight /= np.sqrt(weight @ weight)
            out[1:] += weight @ proj[cols]
            out[0] = 1.0
        return out


# --- the transformer ------------------------------------------------------------------------------


class PreReleaseFeatures(FilmFeatures):
    """`FilmFeatures` (schema 1 columns first, unchanged) plus the switchable groups above.

    `schedule`: (film id, release date, budget) of every film known to be scheduled, whatever
    its outcome (training passes the whole catalogue: dates and budgets are announced before
    release); the training films themselves are always in it. `text_dropout` hides the text of
    that share of training rows, as `people_dropout` does for credits, because clients often
    send no overview.
    """

    schema_version: ClassVar[int] = SCHEMA_VERSION

    def __init__(
        self,
        top_companies: int = 30,
        top_countries: int = 12,
        top_languages: int = 10,
        top_spoken: int = 10,
        top_keywords: int = 40,
        min_count: int = 5,
        people_dropout: float = 0.0,
        random_state: int = 0,
        text_components: int = 0,
        text_max_features: int = 20_000,
        text_dropout: float = 0.0,
        franchise: bool = False,
        release_context: bool = False,
        constant_dollars: bool = False,
        content_rating: bool = False,
        schedule: tuple[tuple[int, str, float | None], ...] | None = None,
    ) -> None:
        super().__init__(
            top_companies=top_companies,
            top_countries=top_countries,
            top_languages=top_languages,
            top_spoken=top_spoken,
            top_keywords=top_keywords,
            min_count=min_count,
            people_dropout=people_dropout,
            random_state=random_state,
        )
        self.text_components = text_components
        self.text_max_features = text_max_features
        self.text_dropout = text_dropout
        self.franchise = franchise
        self.release_context = release_context
        self.constant_dollars = constant_dollars
        self.content_rating = content_rating
        self.schedule = schedule

    # fitting --------------------------------------------------------------------------------

    def _fit(self, records: list[Mapping[str, Any]]) -> FloatMatrix:
        self.cpi_first_year_, self.cpi_levels_ = cpi.log_price_levels()
        self.cpi_base_year_ = self.cpi_first_year_ + len(self.cpi_levels_) - 1
        self._fit_text(records)
        self.franchise_index_ = self._fit_franchise(records) if self.franchise else None
        self.calendar_ = self._fit_calendar(records) if self.release_context else None
        return super()._fit(records)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> FloatMatrix:
        records = as_records(X)
        matrix = self._fit(records)
        rng = np.random.default_rng(self.random_state)
        drop_people = rng.random(len(records)) < self.people_dropout
        drop_text = rng.random(len(records)) < self.text_dropout
        if drop_people.any() or drop_text.any():
            matrix = self._transform_rows(records, drop_people, drop_text)
        return matrix

    def _log_level(self, released: Any) -> float:
        if _missing(released):
            return 0.0
        return cpi.log_level(int(str(released)[:4]), self.cpi_first_year_, self.cpi_levels_)

    def _fit_text(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.prose_vectorizer_: TfidfVectorizer | None = None
        self.keyword_vectorizer_: TfidfVectorizer | None = None
        self.svd_: TruncatedSVD | None = None
        if self.text_components <= 0:
            return
        prose, keywords = zip(*(_texts(r) for r in records), strict=True) if records else ((), ())
        self.prose_vectorizer_ = TfidfVectorizer(
            stop_words="english",
            ngram_range=(1, 2),
            min_df=3,
            max_df=0.5,
            max_features=self.text_max_features,
            sublinear_tf=True,
            dtype=np.float64,
        )
        self.keyword_vectorizer_ = TfidfVectorizer(
            analyzer=_keyword_tokens, min_df=2, sublinear_tf=True, dtype=np.float64
        )
        blocks = [
            self.prose_vectorizer_.fit_transform(prose),
            self.keyword_vectorizer_.fit_transform(keywords),
        ]
        matrix = sp.hstack(blocks).tocsr()
        k = max(1, min(self.text_components, matrix.shape[1] - 1, len(records) - 1))
        self.svd_ = TruncatedSVD(n_components=k, random_state=self.random_state).fit(matrix)

    def _fit_franchise(self, records: Sequence[Mapping[str, Any]]) -> FranchiseIndex:
        index = FranchiseIndex()
        for film, rec in enumerate(records):
            released = rec.get("release_date")
            if _missing(released):
                continue
            revenue = money(rec.get("revenue"))
            log_rev = None
            if revenue is not None:
                log_rev = math.log1p(revenue) - (
                    self._log_level(released) if self.constant_dollars else 0.0
                )
            names = [*_str_list(rec.get("production_companies")), *_str_list(rec.get("directors"))]
            day = date.fromisoformat(str(released)[:10]).toordinal()
            index.add(names, day, film, title_parts(rec.get("title")).stem, log_rev)
        index.freeze()
        return index

    def _fit_calendar(self, records: Sequence[Mapping[str, Any]]) -> ReleaseCalendar:
        rows: dict[int, tuple[date, float | None]] = {}
        for i, (film_id, released, budget) in enumerate(self.schedule or ()):
            if not _missing(released):
                rows[int(film_id) if film_id is not None else -1 - i] = (
                    date.fromisoformat(str(released)[:10]),
                    money(budget),
                )
        for i, rec in enumerate(records):
            if _missing(rec.get("release_date")):
                continue
            rec_id = rec.get("id")
            key = int(rec_id) if rec_id is not None else -(10**9) - i
            rows.setdefault(
                key, (date.fromisoformat(str(rec["release_date"])[:10]), money(rec.get("budget")))
            )
        calendar = ReleaseCalendar()
        big: list[tuple[int, int]] = []
        for film_id, (d, budget) in rows.items():
            calendar.all_days.append(d.toordinal())
            calendar.day_of[film_id] = d.toordinal()
            if (
                budget is not None
                and budget / math.exp(self._log_level(d.isoformat())) >= BIG_BUDGET
            ):
                big.append((d.toordinal(), film_id))
                calendar.months.setdefault(ReleaseCalendar.month_key(d), []).append(film_id)
        big.sort()
        calendar.big_days = [d for d, _ in big]
        calendar.big_ids = [i for _, i in big]
        calendar.all_days.sort()
        calendar.last_day = calendar.all_days[-1] if calendar.all_days else 0
        return calendar

    def _build_tracks(self, records: list[Mapping[str, Any]]) -> dict[str, TrackRecord]:  # type: ignore[override]
        if not self.constant_dollars:
            return FilmFeatures._build_tracks(records)
        # Earlier films' revenues and budgets in constant dollars: a director's 1990 hit is
        # worth more 1990 dollars than 2015 ones.
        deflated: list[Mapping[str, Any]] = []
        for rec in records:
            factor = math.exp(-self._log_level(rec.get("release_date")))
            revenue, budget = money(rec.get("revenue")), money(rec.get("budget"))
            deflated.append(
                {
                    **rec,
                    "revenue": revenue * factor if revenue is not None else None,
                    "budget": budget * factor if budget is not None else None,
                }
            )
        return FilmFeatures._build_tracks(deflated)

    # layout ---------------------------------------------------------------------------------

    def _layout(self) -> None:
        super()._layout()
        names, groups, types = self.feature_names_, self.feature_groups_, self.feature_types_
        self.base_width_ = len(names)

        def add(name: str, group: str, kind: str) -> None:
            names.append(name)
            groups.append(group)
            types.append(kind)

        if self.svd_ is not None:
            add("text_known", "text", "binary")
            for k in range(self.svd_.n_components):
                add(f"text_svd_{k}", "text", "numeric")
        if self.franchise:
            for n, kind in FRANCHISE_FEATURES:
                add(n, "franchise", kind)
        if self.release_context:
            add("big_films_same_week", "release_date", "count")
            add("big_films_same_month", "release_date", "count")
            add("films_same_week", "release_date", "count")
            add("days_to_holiday", "release_date", "numeric")
            add("holiday_window", "release_date", "binary")
        if self.content_rating:
            for rating in RATINGS:
                add(f"content_rating={rating}", "content_rating", "binary")
        if self.constant_dollars:
            add("log_budget_constant", "budget", "numeric")
            add("log_price_level", "release_date", "numeric")  # must stay last
        self._pos = {n: i for i, n in enumerate(names)}

    # transforming ----------------------------------------------------------------------------

    def _transform(self, records: Sequence[Mapping[str, Any]], drop: Any) -> FloatMatrix:
        return self._transform_rows(records, drop, None)

    def _transform_rows(
        self, records: Sequence[Mapping[str, Any]], drop_people: Any, drop_text: Any
    ) -> FloatMatrix:
        out = super()._transform(records, drop_people)
        if len(records):
            self.fill_extras(out, records, drop_people, drop_text)
        return out

    def fill_extras(
        self,
        out: FloatMatrix,
        records: Sequence[Mapping[str, Any]],
        drop_people: Any,
        drop_text: Any,
        franchise_done: bool = False,
    ) -> None:
        """Schema 2's own columns, written into `out` over its schema-1 columns (which they
        read): how `transform` finishes, and how `app.ml.batch_features` extends its
        column-wise schema-1 matrix (which fills the franchise columns itself:
        `franchise_done`)."""
        pos = self._pos
        if self.svd_ is not None:
            j = pos["text_known"]
            out[:, j : j + 1 + self.svd_.n_components] = self._text_block(records, drop_text)
        if self.franchise or self.release_context or self.constant_dollars or self.content_rating:
            self._fill_facts(out, records, drop_people, franchise_done)
        if len(self.all_missing_):
            out[:, self.all_missing_] = 0.0

    def _text_block(self, records: Sequence[Mapping[str, Any]], drop: Any) -> FloatMatrix:
        prose, keywords = (list(t) for t in zip(*(_texts(r) for r in records), strict=True))
        if drop is not None:
            for i in np.flatnonzero(drop):
                prose[i], keywords[i] = "", ""
        fast = self._text_projection()
        if fast is not None:
            return np.vstack([fast.row(p, k) for p, k in zip(prose, keywords, strict=True)])
        return self._text_block_sklearn(prose, keywords)

    def _text_block_sklearn(self, prose: list[str], keywords: list[str]) -> FloatMatrix:
        assert self.svd_ is not None and self.prose_vectorizer_ is not None
        assert self.keyword_vectorizer_ is not None
        sparse = sp.hstack(
            [self.prose_vectorizer_.transform(prose), self.keyword_vectorizer_.transform(keywords)]
        ).tocsr()
        known = (np.diff(sparse.indptr) > 0).astype(np.float64)[:, None]
        reduced = np.asarray(self.svd_.transform(sparse), dtype=np.float64)
        return np.hstack([known, reduced])

    def _text_projection(self) -> TextProjection | None:
        """The fitted TF-IDF + SVD as one lookup table per vocabulary (built on first use,
        never pickled): scikit-learn's sparse path costs ~5 ms per call for one film, mostly
        input validation, against ~0.05 ms here. Checked against it once before use."""
        cached = self.__dict__.get("_text_fast")
        if cached is None:
            assert self.svd_ is not None and self.prose_vectorizer_ is not None
            assert self.keyword_vectorizer_ is not None
            cached = TextProjection.build(
                self.prose_vectorizer_, self.keyword_vectorizer_, self.svd_.components_
            )
            probe = ["a story of love and war in the city", "", "the heist goes wrong"]
            probe_kw = ["heist|sequel", "", "based on novel"]
            if not np.allclose(
                np.vstack([cached.row(p, k) for p, k in zip(probe, probe_kw, strict=True)]),
                self._text_block_sklearn(probe, probe_kw),
                atol=1e-9,
            ):
                cached = False
            self.__dict__["_text_fast"] = cached
        return cached if isinstance(cached, TextProjection) else None

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_text_fast", None)
        return state

    def _fill_facts(
        self,
        out: FloatMatrix,
        records: Sequence[Mapping[str, Any]],
        drop: Any,
        franchise_done: bool = False,
    ) -> None:
        """The franchise, release-context, content-rating and constant-dollar columns. Each
        group's values are gathered film by film into lists and written as one block per
        group: a numpy slice assignment per film and group cost more than the facts."""
        pos = self._pos
        index = self.franchise_index_
        calendar = self.calendar_
        n = len(records)
        franchise_rows: list[tuple[float, ...]] = []
        context_rows: list[tuple[float, ...]] = []
        rating_cells: tuple[list[int], list[int]] = ([], [])
        levels: list[float] = []
        no_context = (NAN, NAN, NAN, NAN, NAN)
        no_prior = (0.0, NAN, NAN, NAN)
        # Per film only what this model's groups read: a batch pays ~20 us a film here.
        franchise, release_context = self.franchise and not franchise_done, self.release_context
        needs_day = franchise or release_context
        constant_dollars, content_rating = self.constant_dollars, self.content_rating
        log_level = self._log_level
        for r, rec in enumerate(records):
            released = rec.get("release_date")
            d = None
            day = FAR_FUTURE
            if needs_day and not _missing(released):
                d = date.fromisoformat(str(released)[:10])
                day = d.toordinal()
            if constant_dollars:
                levels.append(log_level(released))
            if franchise:
                parts = title_parts(rec.get("title"))
                keywords = {k.casefold() for k in _str_list(rec.get("keywords"))}
                hidden = drop is not None and drop[r]
                names = _str_list(rec.get("production_companies"))
                if not hidden:
                    names = [*names, *_str_list(rec.get("directors"))]
                prior = (
                    index.before(names, day, parts.stem)
                    if index is not None and parts.stem
                    else no_prior
                )
                franchise_rows.append(
                    (
                        float(parts.number or 0),
                        float(parts.subtitle),
                        float(not SEQUEL_KEYWORDS.isdisjoint(keywords)),
                        float(
                            not ADAPTATION_KEYWORDS.isdisjoint(keywords)
                            or any(map(str.startswith, keywords, repeat("based on")))
                        ),
                        *prior,
                    )
                )
            if release_context:
                if d is None:
                    context_rows.append(no_context)
                else:
                    film_id = rec.get("id")
                    counts = (
                        calendar.counts(d, int(film_id) if film_id is not None else None)
                        if calendar is not None
                        else (NAN, NAN, NAN)
                    )
                    to_holiday = days_to_holiday(d)
                    december = d.month == 12 and d.day >= 15
                    context_rows.append(
                        (*counts, float(to_holiday), float(to_holiday <= 10 or december))
                    )
            if content_rating:
                given = rec.get("content_rating")
                if given:
                    rating = RATING_ALIASES.get(str(given).strip().upper())
                    if rating is not None:
                        rating_cells[0].append(r)
                        rating_cells[1].append(pos[f"content_rating={rating}"])
        if n == 0:
            return
        if franchise:
            j = pos["title_number"]
            out[:, j : j + FRANCHISE_COLUMNS] = franchise_rows
        if self.release_context:
            j = pos["big_films_same_week"]
            out[:, j : j + 5] = context_rows
        if rating_cells[0]:
            out[rating_cells] = 1.0
        if self.constant_dollars:
            j = pos["log_budget_constant"]
            level = np.asarray(levels, dtype=np.float64)
            out[:, j] = out[:, pos["log_budget"]] - level  # NaN stays NaN
            out[:, j + 1] = level
            for kind in TRACK_KINDS:
                # Constant-dollar track records against the constant-dollar budget.
                out[:, pos[f"{kind}_revenue_to_budget"]] = (
                    out[:, pos[f"{kind}_prior_mean_log_revenue"]] - out[:, j]
                )


def feature_groups_enabled(features: FilmFeatures) -> dict[str, bool]:
    """Which schema-2 groups a fitted transformer uses (all off for schema 1)."""
    if not isinstance(features, PreReleaseFeatures):
        return {
            "text": False,
            "franchise": False,
            "release_context": False,
            "constant_dollars": False,
        }
    return {
        "text": features.text_components > 0,
        "franchise": features.franchise,
        "release_context": features.release_context,
        "constant_dollars": features.constant_dollars,
    }
