"""Pre-release features of a film, as a scikit-learn transformer that trained pipelines pickle.

This module is imported when a model is unpickled, by the service and by `mlflow models
serve`, so it must stay importable from the `app` package, depend on nothing heavier than
numpy/scikit-learn, and change only together with `FEATURE_SCHEMA_VERSION` (the registry
refuses artifacts built against another schema).

Only facts known before release are used: budget, runtime, release date, genres, languages,
companies, countries, keywords, homepage/tagline/collection flags, title, and the people
involved. Popularity, votes and revenue of the film itself are never inputs.

People and companies enter through their *track record*: how many films they made and how
those films earned, counted only over films released strictly before the film in question.
During training that rule is what prevents leakage (a film never sees its own revenue or
any later film's); at serving time the same table, frozen at training time, answers for new
films, so training rows and served rows are computed by exactly the same code.
"""

from __future__ import annotations

import math
import re
import warnings
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from app.ml.targets import HIT_RATIO

# Bump whenever the meaning or order of the output columns changes.
FEATURE_SCHEMA_VERSION = 1
LEAD_ACTORS = 3
LIST_FIELDS = (
    "genres",
    "production_companies",
    "production_countries",
    "spoken_languages",
    "keywords",
)
# Kaggle's TMDB 5000 quirk, handled the same way as the importer (normalize.py): an amount
# below this is in millions.
MILLIONS_THRESHOLD = 1000
HIT_LOG_MULTIPLE = math.log(HIT_RATIO)  # a hit earns at least twice its budget
_SEQUEL_CUE = re.compile(r"(?:\b(?:[2-9]|1[0-9]|ii|iii|iv|v|vi|vii|part)\b|:)", re.IGNORECASE)

FloatMatrix = npt.NDArray[np.float64]
NAN = float("nan")


# --- canonical records ----------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and not value.strip()


def _opt_float(value: Any) -> float | None:
    if _missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def money(value: Any) -> float | None:
    """A budget/revenue as the importer stores it: 0 or missing is unknown, tiny is millions."""
    number = _opt_float(value)
    if number is None or number <= 0:
        return None
    return number * 1_000_000 if number < MILLIONS_THRESHOLD else number


def _str_list(value: Any) -> list[str]:
    if type(value) is list:
        # The common case (canonical records, JSON): a list of clean strings, kept as is.
        for item in value:
            if type(item) is not str or not item or item != item.strip():
                break
        else:
            return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, Mapping):
        name = value.get("name")
        return [str(name)] if name else []
    if isinstance(value, Iterable):
        out: list[str] = []
        for item in value:
            if isinstance(item, Mapping):
                item = item.get("name")
            if item is not None and str(item).strip():
                out.append(str(item).strip())
        return out
    return []


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return not _missing(value)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _billing(member: Mapping[str, Any]) -> int:
    order = member.get("order")
    return order if isinstance(order, int) else 10**6


def film_record(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical pre-release facts of a film, from a stored `movies` document (or any
    mapping with the same field names). Directors and lead actors come from TMDB credits
    (crew job "Director", cast by billing order) when present, else from the IMDB
    enrichment (`imdb.director`, `imdb.actors`)."""
    crew = doc.get("crew") or []
    directors = [
        str(m["name"]) for m in crew if isinstance(m, Mapping) and m.get("job") == "Director"
    ]
    cast = [m for m in doc.get("cast") or [] if isinstance(m, Mapping) and m.get("name")]
    cast.sort(key=_billing)
    actors = [str(m["name"]) for m in cast[:LEAD_ACTORS]]
    imdb = doc.get("imdb") or {}
    if isinstance(imdb, Mapping):
        if not directors and imdb.get("director"):
            directors = [str(imdb["director"])]
        if not actors:
            actors = [str(a) for a in imdb.get("actors") or []][:LEAD_ACTORS]
    rating = doc.get("content_rating")  # a request's certification wins over the enrichment
    if _missing(rating) and isinstance(imdb, Mapping):
        rating = imdb.get("content_rating")
    released = doc.get("release_date")
    if isinstance(released, date):
        released = released.isoformat()
    collection = doc.get("belongs_to_collection")
    return {
        "title": str(doc.get("title") or ""),
        "budget": money(doc.get("budget")),
        "runtime": _opt_float(doc.get("runtime")) or None,
        "release_date": str(released)[:10] if not _missing(released) else None,
        "original_language": None
        if _missing(doc.get("original_language"))
        else str(doc["original_language"]),
        **{f: _str_list(doc.get(f)) for f in LIST_FIELDS},
        "homepage": _flag(doc.get("homepage")),
        "tagline": _flag(doc.get("tagline")),
        # The text itself, for the text features of `app.ml.prerelease` (schema 2); schema-1
        # transformers read only the flag above.
        "overview": _text(doc.get("overview")),
        "tagline_text": _text(doc.get("tagline")),
        "content_rating": _text(rating),
        "belongs_to_collection": bool(collection) and _flag(collection),
        "directors": directors,
        "actors": actors,
        # The outcome travels with training records (it builds the track-record table in
        # `fit`); `transform` never reads it.
        "revenue": money(doc.get("revenue")),
    }


def as_records(X: Any) -> list[Mapping[str, Any]]:
    """Accept a list of canonical records or a DataFrame of them (what MLflow serving
    passes after parsing `dataframe_records`)."""
    if isinstance(X, pd.DataFrame):
        return [{str(k): v for k, v in row.items()} for row in X.to_dict("records")]
    if isinstance(X, Mapping):
        return [X]
    return list(X)


# --- track records ----------------------------------------------------------------------------

Entry = tuple[str, int, float | None, float | None]


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass
class TrackRecord:
    """For every person/company, their films sorted by release date with running totals, so
    that "everything before date D" is one binary search. Plain lists pickle smaller and
    index faster than tiny numpy arrays."""

    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    dates: list[int] = field(default_factory=list)
    films: list[int] = field(default_factory=list)  # running count, revenue known or not
    n_rev: list[int] = field(default_factory=list)
    sum_rev: list[float] = field(default_factory=list)
    max_rev: list[float] = field(default_factory=list)
    n_hit_known: list[int] = field(default_factory=list)  # budget and revenue both known
    n_hit: list[int] = field(default_factory=list)
    sum_roi: list[float] = field(default_factory=list)  # log1p(revenue) - log1p(budget)

    @classmethod
    def build(cls, entries: Iterable[Entry]) -> TrackRecord:
        """entries: (name, release ordinal, log1p revenue, log ROI) with None when unknown."""
        by_name: dict[str, list[tuple[int, float | None, float | None]]] = {}
        for name, day, log_rev, log_roi in entries:
            by_name.setdefault(_key(name), []).append((day, log_rev, log_roi))
        table = cls()
        for name, rows in by_name.items():
            rows.sort(key=lambda r: r[0])
            start = len(table.dates)
            n_rev = n_hk = n_hit = 0
            total = roi = 0.0
            best = NAN
            for films, (day, log_rev, log_roi) in enumerate(rows, start=1):
                if log_rev is not None:
                    n_rev += 1
                    total += log_rev
                    best = log_rev if math.isnan(best) else max(best, log_rev)
                if log_roi is not None:
                    n_hk += 1
                    n_hit += int(log_roi >= HIT_LOG_MULTIPLE)
                    roi += log_roi
                table.dates.append(day)
                table.films.append(films)
                table.n_rev.append(n_rev)
                table.sum_rev.append(total)
                table.max_rev.append(best)
                table.n_hit_known.append(n_hk)
                table.n_hit.append(n_hit)
                table.sum_roi.append(roi)
            table.index[name] = (start, len(table.dates))
        return table

    def before(self, names: Sequence[str], day: int) -> tuple[float, float, float, float, float]:
        """(prior films, mean log revenue, best log revenue, hit rate, mean log ROI) over
        `names`, counting only films released strictly before `day`; NaN where unknown."""
        films = n_rev = n_hk = n_hit = 0
        roi = 0.0
        means: list[float] = []
        best = NAN
        for name in names:
            span = self.index.get(_key(name))
            if span is None:
                continue
            start, end = span
            k = bisect_left(self.dates, day, start, end) - 1
            if k < start:
                continue
            films += self.films[k]
            n_hk += self.n_hit_known[k]
            n_hit += self.n_hit[k]
            roi += self.sum_roi[k]
            if self.n_rev[k]:
                n_rev += self.n_rev[k]
                means.append(self.sum_rev[k] / self.n_rev[k])
                top = self.max_rev[k]
                best = top if math.isnan(best) else max(best, top)
        mean = sum(means) / len(means) if means else NAN
        if not n_hk:
            return float(films), mean, best, NAN, NAN
        return float(films), mean, best, n_hit / n_hk, roi / n_hk


# --- the transformer ---------------------------------------------------------------------------

TRACK_KINDS = ("director", "cast", "companies")
TRACK_STATS = (
    "prior_films",
    "prior_mean_log_revenue",
    "prior_best_log_revenue",
    "prior_hit_rate",
    "prior_mean_log_roi",
)
# Undated films (e.g. announced, no date yet) are predicted as if released after everything
# the model has seen.
FAR_FUTURE = date(9999, 12, 31).toordinal()


def _top(counter: Counter[str], k: int, min_count: int) -> list[str]:
    return [name for name, n in counter.most_common(k) if n >= min_count]


class FilmFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Canonical film records (see `film_record`) -> a float matrix with named columns.

    Missing facts are NaN (tree models route them; linear pipelines impute), multi-valued
    facts become multi-hot columns over the most frequent values seen in training, and
    people/companies become leakage-free track-record statistics.

    `people_dropout` hides director and cast from that fraction of *training* rows (in
    `fit_transform` only), so that "no credits given" at serving time is learnt from
    ordinary films rather than from the few obscure ones the IMDB join missed.
    """

    schema_version: ClassVar[int] = FEATURE_SCHEMA_VERSION

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
    ) -> None:
        self.top_companies = top_companies
        self.top_countries = top_countries
        self.top_languages = top_languages
        self.top_spoken = top_spoken
        self.top_keywords = top_keywords
        self.min_count = min_count
        self.people_dropout = people_dropout
        self.random_state = random_state

    # sklearn API ------------------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> FilmFeatures:
        self._fit(as_records(X))
        return self

    def _fit(self, records: list[Mapping[str, Any]]) -> FloatMatrix:
        counts: dict[str, Counter[str]] = {f: Counter() for f in LIST_FIELDS}
        languages: Counter[str] = Counter()
        for rec in records:
            for f in LIST_FIELDS:
                counts[f].update(set(_str_list(rec.get(f))))
            if rec.get("original_language"):
                languages[str(rec["original_language"])] += 1
        self.genres_ = sorted(_top(counts["genres"], 100, self.min_count))
        self.companies_ = _top(counts["production_companies"], self.top_companies, self.min_count)
        self.countries_ = _top(counts["production_countries"], self.top_countries, self.min_count)
        self.spoken_ = _top(counts["spoken_languages"], self.top_spoken, self.min_count)
        self.keywords_ = _top(counts["keywords"], self.top_keywords, self.min_count)
        self.languages_ = _top(languages, self.top_languages, self.min_count)
        self.tracks_ = self._build_tracks(records)
        self._layout()
        self.n_training_films_ = len(records)
        self.all_missing_ = np.zeros(0, dtype=np.intp)
        matrix = self._transform(records, drop=None)
        # A fact never known in training (e.g. no credits at all in the source) would be an
        # all-NaN column, which gradient boosting cannot bin; it becomes a constant instead,
        # which every estimator ignores.
        self.all_missing_ = np.flatnonzero(np.isnan(matrix).all(axis=0))
        matrix[:, self.all_missing_] = 0.0
        # A typical training film, feature by feature: the "what if this fact were ordinary"
        # reference that explanations compare against.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            self.reference_ = np.nanmedian(matrix, axis=0) if len(matrix) else matrix.sum(0)
        return matrix

    def transform(self, X: Any) -> FloatMatrix:
        return self._transform(as_records(X), drop=None)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> FloatMatrix:
        records = as_records(X)
        matrix = self._fit(records)
        if self.people_dropout > 0:
            rng = np.random.default_rng(self.random_state)
            matrix = self._transform(records, drop=rng.random(len(records)) < self.people_dropout)
        return matrix

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        return np.asarray(self.feature_names_, dtype=object)

    # internals ----------------------------------------------------------------------------------

    @staticmethod
    def _build_tracks(records: list[Mapping[str, Any]]) -> dict[str, TrackRecord]:
        entries: dict[str, list[Entry]] = {k: [] for k in TRACK_KINDS}
        for rec in records:
            released = rec.get("release_date")
            if _missing(released):
                continue  # cannot be placed in time, so it cannot be anyone's prior film
            day = date.fromisoformat(str(released)[:10]).toordinal()
            revenue = money(rec.get("revenue"))
            budget = money(rec.get("budget"))
            log_rev = math.log1p(revenue) if revenue is not None else None
            log_roi = (
                log_rev - math.log1p(budget) if log_rev is not None and budget is not None else None
            )
            for kind, names in (
                ("director", _str_list(rec.get("directors"))),
                ("cast", _str_list(rec.get("actors"))[:LEAD_ACTORS]),
                ("companies", _str_list(rec.get("production_companies"))),
            ):
                entries[kind].extend((n, day, log_rev, log_roi) for n in names)
        return {kind: TrackRecord.build(rows) for kind, rows in entries.items()}

    def _layout(self) -> None:
        names: list[str] = []
        groups: list[str] = []
        types: list[str] = []

        def add(name: str, group: str, kind: str) -> None:
            names.append(name)
            groups.append(group)
            types.append(kind)

        add("log_budget", "budget", "numeric")
        add("budget_known", "budget", "binary")
        add("runtime", "runtime", "numeric")
        for part in ("year", "month", "weekday", "day_of_year"):
            add(f"release_{part}", "release_date", "numeric")
        for g in self.genres_:
            add(f"genre={g}", "genres", "binary")
        add("n_genres", "genres", "count")
        for lang in self.languages_:
            add(f"original_language={lang}", "original_language", "binary")
        for c in self.companies_:
            add(f"company={c}", "production_companies", "binary")
        add("n_companies", "production_companies", "count")
        for c in self.countries_:
            add(f"country={c}", "production_countries", "binary")
        add("n_countries", "production_countries", "count")
        for s in self.spoken_:
            add(f"spoken_language={s}", "spoken_languages", "binary")
        add("n_spoken_languages", "spoken_languages", "count")
        for k in self.keywords_:
            add(f"keyword={k}", "keywords", "binary")
        add("n_keywords", "keywords", "count")
        add("has_homepage", "homepage", "binary")
        add("has_tagline", "tagline", "binary")
        add("in_collection", "belongs_to_collection", "binary")
        add("title_sequel_cue", "title", "binary")
        add("n_directors", "director", "count")
        add("n_lead_actors", "cast", "count")
        for kind in TRACK_KINDS:
            group = "production_companies" if kind == "companies" else kind
            for stat in TRACK_STATS:
                add(f"{kind}_{stat}", group, "count" if stat == "prior_films" else "numeric")
            # What this group's films usually earn relative to this film's budget: the hit
            # question in one number, which small trees would otherwise have to assemble.
            add(f"{kind}_revenue_to_budget", group, "numeric")
        self.feature_names_ = names
        self.feature_groups_ = groups
        self.feature_types_ = types
        pos = {n: i for i, n in enumerate(names)}
        self._pos_genre = {g: pos[f"genre={g}"] for g in self.genres_}
        self._pos_lang = {v: pos[f"original_language={v}"] for v in self.languages_}
        self._pos_company = {v: pos[f"company={v}"] for v in self.companies_}
        self._pos_country = {v: pos[f"country={v}"] for v in self.countries_}
        self._pos_spoken = {v: pos[f"spoken_language={v}"] for v in self.spoken_}
        self._pos_keyword = {v: pos[f"keyword={v}"] for v in self.keywords_}
        self._pos = pos

    def _transform(self, records: Sequence[Mapping[str, Any]], drop: Any) -> FloatMatrix:
        # Rows are filled as Python lists and converted once: item assignment on a list is
        # several times cheaper than on a numpy row, and this loop is the serving hot path.
        pos = self._pos
        width = len(self.feature_names_)
        i_budget, i_runtime, i_year = pos["log_budget"], pos["runtime"], pos["release_year"]
        i_track = pos["director_prior_films"]
        i_homepage, i_tagline = pos["has_homepage"], pos["has_tagline"]
        i_collection, i_sequel = pos["in_collection"], pos["title_sequel_cue"]
        i_directors, i_actors = pos["n_directors"], pos["n_lead_actors"]
        multi = (
            ("genres", self._pos_genre, pos["n_genres"]),
            ("production_companies", self._pos_company, pos["n_companies"]),
            ("production_countries", self._pos_country, pos["n_countries"]),
            ("spoken_languages", self._pos_spoken, pos["n_spoken_languages"]),
            ("keywords", self._pos_keyword, pos["n_keywords"]),
        )
        pos_lang = self._pos_lang
        tracks = [self.tracks_[k] for k in TRACK_KINDS]
        n_stats = len(TRACK_STATS)
        template = [0.0] * width
        rows: list[list[float]] = []
        for r, rec in enumerate(records):
            row = template.copy()
            budget = money(rec.get("budget"))
            log_budget = math.log1p(budget) if budget is not None else NAN
            row[i_budget] = log_budget
            row[i_budget + 1] = 1.0 if budget is not None else 0.0
            runtime = _opt_float(rec.get("runtime"))
            row[i_runtime] = runtime if runtime else NAN
            released = rec.get("release_date")
            if _missing(released):
                row[i_year : i_year + 4] = (NAN, NAN, NAN, NAN)
                day = FAR_FUTURE
            else:
                d = date.fromisoformat(str(released)[:10])
                day = d.toordinal()
                row[i_year : i_year + 4] = (
                    d.year,
                    d.month,
                    d.weekday(),
                    day - date(d.year, 1, 1).toordinal() + 1,
                )
            for f, vocab, count_col in multi:
                values = _str_list(rec.get(f))
                row[count_col] = len(values)
                for v in values:
                    j = vocab.get(v)
                    if j is not None:
                        row[j] = 1.0
            lang = rec.get("original_language")
            if isinstance(lang, str):
                j = pos_lang.get(lang)
                if j is not None:
                    row[j] = 1.0
            row[i_homepage] = 1.0 if _flag(rec.get("homepage")) else 0.0
            row[i_tagline] = 1.0 if _flag(rec.get("tagline")) else 0.0
            row[i_collection] = 1.0 if _flag(rec.get("belongs_to_collection")) else 0.0
            title = rec.get("title")
            row[i_sequel] = 1.0 if title and _SEQUEL_CUE.search(str(title)) else 0.0
            hidden = drop is not None and drop[r]
            directors = [] if hidden else _str_list(rec.get("directors"))
            actors = [] if hidden else _str_list(rec.get("actors"))[:LEAD_ACTORS]
            row[i_directors] = len(directors)
            row[i_actors] = len(actors)
            companies = _str_list(rec.get("production_companies"))
            j = i_track
            for track, names in zip(tracks, (directors, actors, companies), strict=True):
                stats = track.before(names, day)
                row[j : j + n_stats] = stats
                row[j + n_stats] = stats[1] - log_budget  # NaN-propagating
                j += n_stats + 1
            rows.append(row)
        out = np.array(rows, dtype=np.float64) if rows else np.zeros((0, width))
        if len(self.all_missing_):
            out[:, self.all_missing_] = 0.0
        return out

    # descriptions used by model cards and explanations -------------------------------------

    def feature_schema(self) -> list[dict[str, str]]:
        return [
            {"name": n, "type": t, "group": g}
            for n, t, g in zip(
                self.feature_names_, self.feature_types_, self.feature_groups_, strict=True
            )
        ]
