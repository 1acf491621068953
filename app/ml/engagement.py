"""The audience-engagement model at serving time: from a film's pre-release facts, the number
of TMDB votes it will gather and the rating (vote average) it will reach.

Pickled into `artifacts/engagement/<version>/model.joblib` as
`Pipeline([("features", EngagementFeatures), ("model", EngagementRegressor)])`, so like
`app.ml.features` this module must stay importable from the `app` package and change only
together with `FEATURE_SCHEMA_VERSION`.

* `EngagementFeatures` is the revenue model's `FilmFeatures` (the same pre-release facts,
  the same code) plus the audience's track record of the people and companies involved: the
  votes and ratings of their *earlier* films (strictly before the film's release date, as
  for the revenue track records). A film's own votes, rating, popularity or revenue are never
  inputs; the votes of later films never reach an earlier film.
* `EngagementRegressor` holds one estimator per output: log1p(vote_count) over every film,
  and vote_average over films with at least `MIN_RATED_VOTES` votes (a rating from a handful
  of votes is noise: TMDB shows 10.0 for a film two people liked). `predict` returns both
  columns; the service turns them into votes and a rating with their intervals.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.pipeline import Pipeline

from app.ml.estimators import fit_weighted
from app.ml.fastpath import Scorer, compile_tail
from app.ml.features import FAR_FUTURE, LEAD_ACTORS, FilmFeatures, as_records

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
NAN = float("nan")

OUTPUTS = ("vote_count", "vote_average")
# A rating needs this many votes to mean something (about the 9th percentile of the TMDB 5000
# films); below it the film still teaches the vote-count model.
MIN_RATED_VOTES = 10
RATING_RANGE = (0.0, 10.0)
VOTE_KINDS = ("director", "cast", "companies")
VOTE_STATS = ("prior_mean_log_votes", "prior_mean_rating")
# Explanations and the model card group each column under the input field it derives from.
_GROUP = {"director": "director", "cast": "cast", "companies": "production_companies"}


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _names(value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        return []
    return [str(v) for v in value if isinstance(v, str) and v.strip()]


def _day(released: Any) -> int | None:
    if not isinstance(released, str) or not released.strip():
        return None
    try:
        return date.fromisoformat(released[:10]).toordinal()
    except ValueError:
        return None


def outcome(rec: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(log1p votes, rating) of a training record; the rating only when it counts."""
    votes = rec.get("vote_count")
    if not isinstance(votes, int | float) or isinstance(votes, bool) or not math.isfinite(votes):
        return None, None
    if votes < 0:
        return None, None
    rating = rec.get("vote_average")
    rated = (
        float(rating)
        if votes >= MIN_RATED_VOTES
        and isinstance(rating, int | float)
        and not isinstance(rating, bool)
        and math.isfinite(rating)
        else None
    )
    return math.log1p(float(votes)), rated


@dataclass
class VoteRecord:
    """Per person/company, their films by release date with running vote totals, so that
    "their films before date D" is one binary search (the layout of `TrackRecord`)."""

    index: dict[str, tuple[int, int]] = field(default_factory=dict)
    dates: list[int] = field(default_factory=list)
    n_votes: list[int] = field(default_factory=list)
    sum_log_votes: list[float] = field(default_factory=list)
    n_rated: list[int] = field(default_factory=list)
    sum_rating: list[float] = field(default_factory=list)

    @classmethod
    def build(cls, entries: Iterable[tuple[str, int, float | None, float | None]]) -> VoteRecord:
        by_name: dict[str, list[tuple[int, float | None, float | None]]] = {}
        for name, day, log_votes, rating in entries:
            by_name.setdefault(_key(name), []).append((day, log_votes, rating))
        table = cls()
        for name, rows in by_name.items():
            rows.sort(key=lambda r: r[0])
            start = len(table.dates)
            n_votes = n_rated = 0
            total_votes = total_rating = 0.0
            for day, log_votes, rating in rows:
                if log_votes is not None:
                    n_votes += 1
                    total_votes += log_votes
                if rating is not None:
                    n_rated += 1
                    total_rating += rating
                table.dates.append(day)
                table.n_votes.append(n_votes)
                table.sum_log_votes.append(total_votes)
                table.n_rated.append(n_rated)
                table.sum_rating.append(total_rating)
            table.index[name] = (start, len(table.dates))
        return table

    def before(self, names: Sequence[str], day: int) -> tuple[float, float]:
        """(mean log1p votes, mean rating) of the films of `names` released strictly before
        `day`: the mean over names of each one's mean, NaN where nobody has a known film."""
        votes: list[float] = []
        ratings: list[float] = []
        for name in names:
            span = self.index.get(_key(name))
            if span is None:
                continue
            start, end = span
            k = bisect_left(self.dates, day, start, end) - 1
            if k < start:
                continue
            if self.n_votes[k]:
                votes.append(self.sum_log_votes[k] / self.n_votes[k])
            if self.n_rated[k]:
                ratings.append(self.sum_rating[k] / self.n_rated[k])
        return (
            sum(votes) / len(votes) if votes else NAN,
            sum(ratings) / len(ratings) if ratings else NAN,
        )


def _people(rec: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    return (
        _names(rec.get("directors")),
        _names(rec.get("actors"))[:LEAD_ACTORS],
        _names(rec.get("production_companies")),
    )


class EngagementFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """`FilmFeatures` columns, then the audience track record of director, lead cast and
    companies (`vote_history=False` leaves it out: the ablation in the model card).

    `people_dropout` hides director and cast from that share of *training* rows, in both
    parts, for the reason `FilmFeatures` gives (clients often send no credits).
    """

    def __init__(
        self, vote_history: bool = True, people_dropout: float = 0.0, random_state: int = 0
    ) -> None:
        self.vote_history = vote_history
        self.people_dropout = people_dropout
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> EngagementFeatures:
        self._fit(as_records(X))
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> FloatMatrix:
        records = as_records(X)
        matrix = self._fit(records)
        if self.people_dropout > 0:
            hide = np.random.default_rng(self.random_state).random(len(records))
            shown = [
                {**r, "directors": [], "actors": []} if h < self.people_dropout else r
                for r, h in zip(records, hide, strict=True)
            ]
            matrix = self._transform(shown)
        return matrix

    def transform(self, X: Any) -> FloatMatrix:
        return self._transform(as_records(X))

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        return np.asarray(self.feature_names_, dtype=object)

    def feature_schema(self) -> list[dict[str, str]]:
        return [
            {"name": n, "type": t, "group": g}
            for n, t, g in zip(
                self.feature_names_, self.feature_types_, self.feature_groups_, strict=True
            )
        ]

    def _fit(self, records: list[Mapping[str, Any]]) -> FloatMatrix:
        # The base step sees every film's people: the track records are built from all
        # training films; hiding people is only done to the rows the estimator learns from.
        self.base_ = FilmFeatures().fit(records)
        names = list(self.base_.feature_names_)
        groups = list(self.base_.feature_groups_)
        types = list(self.base_.feature_types_)
        if self.vote_history:
            entries: dict[str, list[tuple[str, int, float | None, float | None]]] = {
                k: [] for k in VOTE_KINDS
            }
            for rec in records:
                day = _day(rec.get("release_date"))
                if day is None:
                    continue  # cannot be placed in time: nobody's earlier film
                log_votes, rating = outcome(rec)
                for kind, people in zip(VOTE_KINDS, _people(rec), strict=True):
                    entries[kind].extend((n, day, log_votes, rating) for n in people)
            self.votes_ = {k: VoteRecord.build(v) for k, v in entries.items()}
            for kind in VOTE_KINDS:
                for stat in VOTE_STATS:
                    names.append(f"{kind}_{stat}")
                    groups.append(_GROUP[kind])
                    types.append("numeric")
        else:
            self.votes_ = {}
        self.feature_names_ = names
        self.all_missing_ = np.zeros(0, dtype=np.intp)
        self.feature_groups_ = groups
        self.feature_types_ = types
        matrix = self._transform(records)
        base_width = len(self.base_.feature_names_)
        # As in FilmFeatures: a column never known in training becomes a constant.
        self.all_missing_ = base_width + np.flatnonzero(np.isnan(matrix[:, base_width:]).all(0))
        matrix[:, self.all_missing_] = 0.0
        extra = matrix[:, base_width:]
        if extra.shape[1] and len(extra):
            with np.errstate(all="ignore"):
                medians = np.nanmedian(extra, axis=0)
        else:
            medians = np.zeros(extra.shape[1])
        self.reference_ = np.concatenate([np.asarray(self.base_.reference_), medians])
        return matrix

    def _transform(self, records: Sequence[Mapping[str, Any]]) -> FloatMatrix:
        base = self.base_.transform(records)
        if not self.vote_history:
            return base
        tables = [self.votes_[k] for k in VOTE_KINDS]
        extra = np.empty((len(records), len(VOTE_KINDS) * len(VOTE_STATS)))
        for r, rec in enumerate(records):
            day = _day(rec.get("release_date"))
            # Undated films are predicted as if released after everything seen (FilmFeatures).
            when = FAR_FUTURE if day is None else day
            row: list[float] = []
            for table, people in zip(tables, _people(rec), strict=True):
                row.extend(table.before(people, when))
            extra[r] = row
        if len(self.all_missing_):
            extra[:, self.all_missing_ - base.shape[1]] = 0.0
        return np.hstack([base, extra])


def _rated(y: Any, minimum: int) -> tuple[FloatVector, FloatVector, npt.NDArray[np.bool_]]:
    Y = np.asarray(y, dtype=np.float64).reshape(-1, 2)
    votes, rating = Y[:, 0], Y[:, 1]
    rated = (votes >= minimum) & np.isfinite(rating)
    return votes, rating, rated


class EngagementRegressor(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    """Two estimators behind one `predict`: column 0 log1p(vote_count), column 1 the rating.

    `fit(X, y)` takes y as (n, 2) raw [vote_count, vote_average]; the rating model learns
    only from rows with at least `min_rated_votes` votes.
    """

    def __init__(
        self,
        vote_count: Any = None,
        vote_average: Any = None,
        min_rated_votes: int = MIN_RATED_VOTES,
    ) -> None:
        self.vote_count = vote_count
        self.vote_average = vote_average
        self.min_rated_votes = min_rated_votes

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> EngagementRegressor:
        """`sample_weight`: None, or (n, 2) per-film weights, one column per output (each
        output chooses its own recency weights in training)."""
        X = np.asarray(X, dtype=np.float64)
        votes, rating, rated = _rated(y, self.min_rated_votes)
        if self.vote_count is None or self.vote_average is None:
            raise ValueError("EngagementRegressor needs both estimators")
        if not rated.any():
            raise ValueError(f"no training film has {self.min_rated_votes} votes or more")
        weights: list[FloatVector | None] = [None, None]
        if sample_weight is not None:
            W = np.asarray(sample_weight, dtype=np.float64).reshape(len(X), len(OUTPUTS))
            weights = [W[:, 0], W[:, 1][rated]]
        self.estimators_ = [
            fit_weighted(clone(self.vote_count), X, np.log1p(votes), weights[0]),
            fit_weighted(clone(self.vote_average), X[rated], rating[rated], weights[1]),
        ]
        return self

    def predict(self, X: Any) -> FloatMatrix:
        X = np.asarray(X, dtype=np.float64)
        return np.column_stack(
            [np.asarray(e.predict(X), dtype=np.float64) for e in self.estimators_]
        )


def compile_engagement(pipeline: Pipeline) -> Scorer | None:
    """The fast scorer of an engagement pipeline: each output's estimator compiled by
    `app.ml.fastpath` (None when either cannot be)."""
    model = pipeline.steps[-1][1]
    if len(pipeline.steps) != 2 or not isinstance(model, EngagementRegressor):
        return None
    parts: list[Scorer] = []
    for estimator in model.estimators_:
        steps = estimator.steps if isinstance(estimator, Pipeline) else [("model", estimator)]
        fast = compile_tail(Pipeline([("features", "passthrough"), *steps]))
        if fast is None:
            return None
        parts.append(fast)

    def score(X: FloatMatrix) -> FloatMatrix:
        return np.column_stack([part(X) for part in parts])

    return score
