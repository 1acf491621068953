"""The fast prediction input path against the reference one.

- `fast_items` (plain-Python validation that derives canonical records in the same pass)
  accepts only what pydantic accepts, and for what it accepts gives the same films and the
  records `film_record(film_document(film))` gives: on every real train film, and on
  thousands of films made awkward at random (blank and padded names, numbers in strings,
  floats for ids, bad dates, oversized lists, ...).
- `BatchFeatures` gives `FilmFeatures.transform`'s matrix bit for bit on the same films,
  and a model whose batch path disagrees is served by the reference path instead.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from app.ml import artifacts
from app.ml import batch_features as batch_module
from app.ml.batch_features import BatchFeatures
from app.ml.features import film_record
from app.ml.monitoring import PredictionMonitor
from app.ml.registry import LoadedModel, load_version
from app.models.predict import Film, PredictRequest
from app.models.predict_fast import fast_items
from app.services.predict import _score, film_document, film_records
from tests.ml_support import FILM, FILM_PLAIN, NBSP, tmdb_items, tmdb_records, trained_artifacts


def reference(item: dict[str, Any]) -> tuple[Film, dict[str, Any]]:
    """pydantic's film and its canonical record, the way the service built them before."""
    film = Film.model_validate(item)
    return film, film_record(film_document(film))


def fast(item: dict[str, Any]) -> tuple[Film, dict[str, Any]] | None:
    if fast_items({"items": [item]}) == [None]:
        return None
    request = PredictRequest.model_validate({"items": [item]})
    assert request.records is not None and request.records[0] is not None  # the fast path
    return request.items[0], request.records[0]


def assert_same_film(item: dict[str, Any]) -> None:
    ours, slow = fast(item), reference(item)
    assert ours is not None
    (film, record), (slow_film, slow_record) = ours, slow
    assert record == slow_record
    assert film_document(film) == film_document(slow_film)
    assert film.title == slow_film.title and film.dropped == [] == slow_film.dropped
    for name in ("budget", "runtime", "release_date", "original_language", "homepage"):
        assert getattr(film, name) == getattr(slow_film, name), name


def test_train_films_take_the_fast_path_and_get_the_reference_record() -> None:
    records, plain = tmdb_records(), tmdb_items(3804)
    slow: list[int] = []
    for item in [*records, *plain, FILM, FILM_PLAIN]:
        if fast(item) is None:
            slow.append(item["id"])
            continue
        assert_same_film(item)
    # The few that need pydantic have a name to trim (e.g. "archeology\xa0") or, for
    # "Good bye, Lenin!" (338), a keyword named by a lone NBSP to drop.
    assert 338 in slow and len(slow) < 0.02 * len(records), slow
    padded = [r for r in records if r["id"] in slow]
    assert all(
        any(
            isinstance(v, dict) and v.get("name") != v.get("name", "").strip()
            for field in LISTS
            for v in r[field]
        )
        for r in padded
    )
    # In a batch, those films alone are validated by pydantic; the batch gets the same
    # records, and the dropped keyword is reported.
    clean = [r for r in records[:300] if r["id"] not in slow]
    batch = padded + clean
    request = PredictRequest.model_validate({"items": batch})
    assert request.records is not None
    assert [r is None for r in request.records] == [True] * len(padded) + [False] * len(clean)
    assert film_records(request) == [reference(item)[1] for item in batch]
    lenin = next(i for i, r in enumerate(batch) if r["id"] == 338)
    assert request.items[lenin].dropped == [("keywords", 13)]


# Values that pydantic coerces, trims, drops or refuses, mixed with ordinary ones.
AWKWARD: dict[str, list[Any]] = {
    # The TMDB id goes to the prediction log: at most 2**53, and never past 64 bits (BSON).
    "id": [None, 1, 28, 0, -1, 2**53, 2**53 + 1, 2**64, "28", 28.0, True],
    "title": [None, "", " padded ", "x" * 500, "x" * 501, 7, ["list"]],
    "budget": [None, 0, 5, 2.5, -1, "", " ", "120", "1e3", True, 10**400, 1e308, "nan", []],
    "runtime": [None, 0, 90, 1000, 1000.5, "95", -3, False],
    "release_date": [
        None,
        "",
        "  ",
        "2020-02-29",
        "2021-02-29",
        "2020-1-1",
        "20200101",
        "2020-01-01T00:00:00",
        "0001-01-01",
        "9999-12-31",
        "0000-01-01",
        1_600_000_000,
        "\uff12\uff10\uff12\uff10-01-01",
    ],
    "original_language": [None, "", " ", "en", " en", "x" * 10, "x" * 11, " " * 11, 3],
    "homepage": [None, "", " ", "https://x", 5, "x" * 2001],
    "tagline": [None, "", "Again.", " Padded tagline ", False],
    # Schema 2's text and rating inputs (issue 14): kept as posted, stripped in the record.
    "overview": [None, "", " ", "A heist in orbit.", " padded ", "x" * 10_000, "x" * 10_001, 5],
    "content_rating": [None, "", "PG-13", " r ", "x" * 20, "x" * 21, 13, ["R"]],
    "belongs_to_collection": [
        None,
        "Saga",
        " Saga",
        NBSP,
        "",
        {"id": 1, "name": "Saga"},
        {"name": " "},
        {"id": "1", "name": "S"},
        {"id": None, "name": "S"},
        {"id": 2},
        5,
    ],
}
LIST_ITEMS: list[Any] = [
    "Action",
    " Action",
    "Action ",
    NBSP + "Action",
    "",
    " ",
    NBSP,
    "x" * 300,
    "x" * 301,
    {"id": 28, "name": "Action"},
    {"id": 28.0, "name": "Action"},
    {"id": "28", "name": "Drama"},
    {"id": True, "name": "Drama"},
    {"id": None, "name": "Drama"},
    {"name": "Crime", "extra": 1},
    {"name": ""},
    {"name": None},
    {"id": 3},
    {"iso_3166_1": "US", "name": "United States"},
    {"iso_3166_1": " US"},
    {"iso_3166_1": "", "name": "Nowhere"},
    {"iso_3166_1": "US", "name": None},
    {"iso_639_1": "en"},
    {"iso_639_1": "english-language"},
    None,
    5,
    ["nested"],
]
CAST: list[Any] = [
    "Star",
    " Star",
    {"name": "Lead", "order": 0},
    {"name": "Second", "order": 1},
    {"name": "Late", "order": 12, "character": "Cook"},
    {"name": "Negative", "order": -1},
    {"name": "Float order", "order": 1.0},
    {"name": "No order"},
    {"name": "Null order", "order": None},
    {"name": "Bad character", "character": 5},
    {"order": 3},
    {"name": NBSP},
]
CREW: list[Any] = [
    "Someone",
    {"name": "Boss", "job": "Director"},
    {"name": "Boss", "job": "Director"},
    {"name": "Writer", "job": "Screenplay", "department": "Writing"},
    {"name": "J", "job": 5},
    {"name": "D", "job": None, "department": None},
    {"name": " ", "job": "Director"},
    {"job": "Director"},
]
LISTS = ("genres", "production_companies", "production_countries", "spoken_languages", "keywords")


def awkward_film(rng: random.Random) -> dict[str, Any]:
    film = copy.deepcopy(rng.choice([FILM, FILM_PLAIN, {"title": "Bare"}]))
    for field, values in AWKWARD.items():
        if rng.random() < 0.15:
            film[field] = rng.choice(values)
    for field in LISTS:
        if rng.random() < 0.25:
            film[field] = rng.sample(LIST_ITEMS, rng.randint(0, 4))
    if rng.random() < 0.25:
        film["cast"] = rng.sample(CAST, rng.randint(0, 5))
    if rng.random() < 0.25:
        film["crew"] = rng.sample(CREW, rng.randint(0, 4))
    if rng.random() < 0.03:
        film["genres"] = ["Drama"] * rng.choice([50, 51])
    if rng.random() < 0.05:
        film[rng.choice(LISTS)] = rng.choice([None, "Action", {"name": "Action"}])
    if rng.random() < 0.1:  # as TMDB's API nests them
        film["keywords"] = {"id": 1, "keywords": film.get("keywords", [])}
        film["credits"] = {"cast": film.pop("cast", []), "crew": film.pop("crew", [])}
    return film


def test_the_fast_path_accepts_only_what_pydantic_accepts_and_agrees_with_it() -> None:
    rng = random.Random(15)
    taken = refused = coerced = 0
    for _ in range(4000):
        item = awkward_film(rng)
        try:
            Film.model_validate(item)
        except ValidationError:
            assert fast(item) is None, item
            refused += 1
            continue
        if fast(item) is None:
            coerced += 1  # accepted by pydantic after coercing, trimming or dropping
        else:
            assert_same_film(item)
            taken += 1
    # Every branch was really exercised.
    assert taken > 400 and refused > 400 and coerced > 100, (taken, refused, coerced)


def test_interval_level_is_the_same_on_both_paths() -> None:
    """A plain in-range number is taken by the fast path; anything else goes to pydantic,
    which coerces or refuses it as it always did."""
    items = [FILM, FILM_PLAIN]
    for level in (None, 0.5, 0.95, 1, "0.9", 0.49, 0.951, True, "high", float("nan")):
        body: dict[str, Any] = {"items": items}
        if level is not None:
            body["interval_level"] = level
        try:
            request = PredictRequest.model_validate(body)
        except ValidationError:
            continue  # refused by pydantic, whichever path saw it first
        expected = None if level is None else float(level)
        assert request.interval_level == expected, level
        # The films took the fast path whenever the level let them.
        taken = request.records is not None
        assert taken == (level is None or type(level) in (int, float)), level


def test_a_request_with_a_bad_film_reports_it_by_index_and_field() -> None:
    items = [
        {**FILM, "budget": -5},
        FILM_PLAIN,
        {**FILM, "keywords": [" padded "]},  # coerced by pydantic, not an error
        {**FILM, "genres": ["Action", {"id": "x", "name": "Drama"}]},
    ]
    with pytest.raises(ValidationError) as refused:
        PredictRequest.model_validate({"items": items})
    assert [e["loc"] for e in refused.value.errors()] == [
        ("items", 0, "budget"),
        ("items", 3, "genres", 1, "object", "id"),
    ]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[LoadedModel]:
    root, _ = trained_artifacts(tmp_path_factory)
    # The models built on `FilmFeatures`, which the batch path mirrors (not engagement's).
    return [_load(root, name) for name in ("revenue", "hit")]


def _load(root: Path, name: str) -> LoadedModel:
    version = artifacts.read_active(root, name)
    assert version is not None
    return load_version(root, name, version)


def awkward_records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(8)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        try:
            out.append(reference(awkward_film(rng))[1])
        except ValidationError:
            continue
    return out


def test_batch_features_equal_the_reference_transform_bit_for_bit(
    models: list[LoadedModel],
) -> None:
    records = film_records(PredictRequest.model_validate({"items": tmdb_records()[:1000]}))
    plain = [reference(i)[1] for i in tmdb_items(3804)]
    for model in models:
        assert model.batch_features is not None, model.name
        for batch in (records, plain, awkward_records(500), plain[:8], plain[:1]):
            ours = model.batch_features.transform(batch)
            theirs = model.features.transform(batch)
            assert ours.shape == theirs.shape
            assert np.array_equal(ours, theirs, equal_nan=True), model.name
        # The compiled trees (padded to full depth) score the batch as scikit-learn does.
        X_all = model.transform(records)
        assert model.fast_max_rows >= len(records)
        assert np.allclose(model.score_matrix(X_all), model.reference_scorer(X_all), atol=1e-9)
        # The features that carry most of the signal are really filled in.
        X = model.transform(plain)
        for column in ("log_budget", "director_prior_mean_log_revenue", "genre=Drama"):
            assert np.nanmax(X[:, model.feature_index[column]]) > 0, column


def test_a_model_whose_batch_features_disagree_is_served_by_the_reference(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = trained_artifacts(tmp_path_factory)
    real = BatchFeatures.transform

    def off_by_one(self: BatchFeatures, records: Any) -> Any:
        return real(self, records) + 1.0

    monkeypatch.setattr(BatchFeatures, "transform", off_by_one)
    model = _load(root, "revenue")
    assert model.batch_features is None
    records = [reference(i)[1] for i in tmdb_items(20)]
    assert np.array_equal(
        model.transform(records), model.features.transform(records), equal_nan=True
    )
    assert batch_module.verified(BatchFeatures(model.features), records) is False


def test_the_log_keeps_the_default_interval_whatever_level_was_asked(
    models: list[LoadedModel],
) -> None:
    """Live coverage is judged against the card's default level, so the prediction log
    keeps that interval even when a request asked for another."""
    revenue = next(m for m in models if m.name == "revenue")
    items = [FILM, FILM_PLAIN, *tmdb_items(3)]
    logged = [0, 2, 4]
    wide = PredictRequest.model_validate({"items": items, "interval_level": 0.95})
    plain = PredictRequest.model_validate({"items": items})
    body_wide, log_wide = _score(revenue, wide, False, PredictionMonitor(), logged, 0.95)
    body_plain, log_plain = _score(revenue, plain, False, PredictionMonitor(), logged, None)
    assert body_wide["interval_level"] == 0.95 and body_plain["interval_level"] == 0.8
    assert body_wide["predictions"] != body_plain["predictions"]
    assert log_wide is not None and log_plain is not None
    assert log_wide.outputs == log_plain.outputs
