"""Leakage guards for the feature groups of schema 2 (`app.ml.prerelease`): text, franchise,
release context, constant dollars and content rating.

The rules: a film's features use only facts known before its release (never its own
revenue, votes, rating or popularity), and facts about other films only from films released
strictly before it (the calendar of release dates and budgets is announced, so it may look
ahead; outcomes may not). Each group is checked on hand-made films where the answer is known,
and all groups together on the real films."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from app.ml import cpi
from app.ml.batch_features import BatchFeatures
from app.ml.features import film_record
from app.ml.prerelease import BIG_BUDGET, PreReleaseFeatures
from tests.ml_support import real_dataset

OUTCOMES = ("revenue", "vote_count", "vote_average", "popularity")


def every_group(**overrides: Any) -> PreReleaseFeatures:
    options: dict[str, Any] = {
        "text_components": 8,
        "franchise": True,
        "release_context": True,
        "constant_dollars": True,
        "content_rating": True,
    }
    return PreReleaseFeatures(**(options | overrides))


def film(
    film_id: int,
    title: str,
    released: str,
    revenue: float | None = 50_000_000,
    *,
    budget: float = 20_000_000,
    company: str = "Studio One",
    director: str = "Dee Rector",
    overview: str = "",
    rating: str | None = None,
) -> dict[str, Any]:
    rec = film_record(
        {
            "title": title,
            "budget": budget,
            "revenue": revenue,
            "release_date": released,
            "genres": ["Drama"],
            "production_companies": [company],
            "crew": [{"name": director, "job": "Director"}],
            "overview": overview,
            "content_rating": rating,
        }
    )
    return {**rec, "id": film_id}


def columns(step: PreReleaseFeatures, X: np.ndarray, *names: str) -> np.ndarray:
    return X[:, [step.feature_names_.index(n) for n in names]]


def with_outcomes_changed(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        **rec,
        "revenue": 9.9e9,
        "vote_count": 123_456,
        "vote_average": 9.9,
        "popularity": 1e6,
    }


# --- franchise ----------------------------------------------------------------------------------

FRANCHISE = ("franchise_prior_films", "franchise_prior_best_log_revenue")


def test_franchise_counts_only_earlier_films_of_the_same_maker() -> None:
    films = [
        film(1, "Rocky", "1976-11-21", 100_000_000),
        film(2, "Rocky II", "1979-06-15", 200_000_000),
        film(3, "Rocky III", "1979-06-15", 1e10),  # the same day as II: not earlier
        film(4, "Rocky IV", "1985-11-27", 300_000_000),
        film(5, "Rocky V", "1990-11-16", 40_000_000, company="Other", director="Someone Else"),
    ]
    # Nominal dollars, so that the expected revenue is plain.
    step = every_group(text_components=0, constant_dollars=False).fit(films)
    X = columns(step, step.transform(films), *FRANCHISE)
    assert X[0, 0] == 0 and math.isnan(X[0, 1])  # nothing before the first
    assert X[1].tolist() == pytest.approx([1, math.log1p(100_000_000)])
    assert X[2].tolist() == pytest.approx([1, math.log1p(100_000_000)])  # not II, same day
    assert X[3].tolist() == pytest.approx([3, math.log1p(1e10)])
    assert X[4, 0] == 0  # another company and director: not the same franchise here
    # Later films' revenue, or their absence, changes nothing for the earlier ones.
    changed = [*films[:2], *(with_outcomes_changed(f) for f in films[2:])]
    again = every_group(text_components=0, constant_dollars=False).fit(changed)
    np.testing.assert_array_equal(again.transform(changed)[:2], step.transform(films)[:2])
    alone = every_group(text_components=0, constant_dollars=False).fit(films[:2])
    np.testing.assert_array_equal(columns(alone, alone.transform(films[:2]), *FRANCHISE), X[:2])


# --- release context ----------------------------------------------------------------------------

CONTEXT = ("big_films_same_week", "big_films_same_month", "films_same_week")


def test_release_context_reads_the_calendar_not_outcomes() -> None:
    big = BIG_BUDGET * 2
    films = [
        film(1, "Opener", "2010-07-16", budget=big),
        film(2, "Rival", "2010-07-18", budget=big),
        film(3, "Small one", "2010-07-14"),
        film(4, "Late July", "2010-07-30", budget=big),
        film(5, "Next month", "2010-08-02", budget=big),
    ]
    step = every_group(text_components=0).fit(films)
    X = columns(step, step.transform(films), *CONTEXT)
    # Opener: Rival within three days (itself not counted), three big films in July besides
    # it, and two films in its week.
    assert X[0].tolist() == [1, 2, 2]
    assert X[4].tolist() == [1, 0, 1]  # Late July is three days before; August is otherwise empty
    # Outcomes of any film, earlier or later, change nothing.
    changed = [with_outcomes_changed(f) for f in films]
    again = every_group(text_components=0).fit(changed)
    np.testing.assert_array_equal(columns(again, again.transform(changed), *CONTEXT), X)
    # The announced budget of a neighbour is what counts (the feature is live).
    bigger = [films[0], films[1], {**films[2], "budget": big}, *films[3:]]
    moved = every_group(text_components=0).fit(bigger)
    assert columns(moved, moved.transform(bigger[:1]), *CONTEXT)[0].tolist() == [2, 3, 2]


# --- text ---------------------------------------------------------------------------------------


def test_text_features_read_the_text_only() -> None:
    records = [r for r in real_dataset().records[:600] if r.get("overview")]
    step = every_group(franchise=False, release_context=False).fit(records)
    changed = [with_outcomes_changed(r) for r in records]
    again = every_group(franchise=False, release_context=False).fit(changed)
    names = [n for n in step.feature_names_ if n.startswith("text_")]
    assert len(names) == 9  # text_known and 8 components
    np.testing.assert_array_equal(
        columns(again, again.transform(changed), *names),
        columns(step, step.transform(records), *names),
    )
    # ...and a film's text does move them (the guard is not vacuous).
    other = {**records[0], "overview": records[1]["overview"]}
    assert not np.array_equal(
        columns(step, step.transform([other]), *names),
        columns(step, step.transform(records[:1]), *names),
    )


# --- constant dollars and content rating --------------------------------------------------------


def test_constant_dollars_use_the_release_years_price_level_only() -> None:
    films = [film(1, "Then", "1985-05-01", budget=10_000_000), film(2, "Now", "2015-05-01")]
    step = every_group(text_components=0).fit(films)
    X = columns(step, step.transform(films), "log_budget_constant", "log_price_level")
    for row, rec in zip(X, films, strict=True):
        year = int(rec["release_date"][:4])
        level = cpi.log_level(year, step.cpi_first_year_, step.cpi_levels_)
        assert row.tolist() == pytest.approx([math.log1p(rec["budget"]) - level, level])
    # The 1985 budget is worth more in constant dollars than its nominal amount.
    assert X[0, 0] > math.log1p(10_000_000)
    changed = [with_outcomes_changed(f) for f in films]
    np.testing.assert_array_equal(step.transform(changed), step.transform(films))


def test_content_rating_is_the_films_own_certification() -> None:
    films = [film(1, "Kids", "2001-01-01", rating="PG"), film(2, "Adults", "2002-01-01")]
    step = every_group(text_components=0).fit(films)
    ratings = [n for n in step.feature_names_ if n.startswith("content_rating=")]
    X = columns(step, step.transform(films), *ratings)
    assert X[0].tolist() == [float(n == "content_rating=PG") for n in ratings]
    assert X[1].sum() == 0  # unknown: no column set


# --- every group together, on the real films ----------------------------------------------------


def test_later_outcomes_never_reach_earlier_films_on_real_data() -> None:
    """Fit on real films with every group on; give every film released on or after a date D
    other outcomes: the features of every film released on or before D (those of day D
    included, whose own outcomes changed) stay the same, in training and when served."""
    records = sorted(
        (r for r in real_dataset().records[:900] if r.get("release_date")),
        key=lambda r: (r["release_date"], r["id"]),
    )
    cutoff = records[len(records) // 2]["release_date"]
    changed = [with_outcomes_changed(r) if r["release_date"] >= cutoff else r for r in records]
    upto = [i for i, r in enumerate(records) if r["release_date"] <= cutoff]
    first, second = every_group().fit(records), every_group().fit(changed)
    np.testing.assert_array_equal(
        first.transform([records[i] for i in upto]),
        second.transform([changed[i] for i in upto]),
    )
    # Served: a film's own outcomes are never read.
    np.testing.assert_array_equal(
        first.transform(records), first.transform([with_outcomes_changed(r) for r in records])
    )
    # Later films do see the changed revenue of earlier ones (the guard is not vacuous).
    later = [i for i, r in enumerate(records) if r["release_date"] > cutoff]
    assert not np.array_equal(
        first.transform([records[i] for i in later]),
        second.transform([changed[i] for i in later]),
    )


def test_a_batch_gets_the_features_each_film_gets_alone() -> None:
    """Schema 2's columns are gathered per group and written as blocks: a batch must give
    every film the row it gets on its own (no film's facts land in another's row)."""
    records = real_dataset().records[:400]
    step = every_group(text_components=4).fit(records)
    served = [with_outcomes_changed(r) for r in records[:120]]
    alone = np.vstack([step.transform([r]) for r in served])
    np.testing.assert_array_equal(step.transform(served), alone)
    batch = BatchFeatures(step)
    np.testing.assert_array_equal(batch.transform(served), alone)
    # Again, with every name's key and keyword cue now remembered from the first batch.
    np.testing.assert_array_equal(batch.transform(served[::-1]), alone[::-1])
