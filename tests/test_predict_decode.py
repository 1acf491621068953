"""Clean prediction bodies decoded with msgspec (`decode_clean`) against pydantic.

`decode_clean` takes a body whole or not at all, and only what pydantic accepts as it is; for
what it takes it gives the films' titles and ids as pydantic validates them and the records
`film_record(film_document(film))` gives. Checked on every real train film and on thousands of
films made awkward at random (the generator of `test_predict_fast`).
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.models.predict import Film, PredictRequest
from app.models.predict_decode import CleanBatch, decode_clean
from app.models.predict_fast import LIST_MAX, MAX_ITEMS
from app.services.predict import film_records
from tests.ml_support import FILM, FILM_PLAIN, tmdb_items, tmdb_records
from tests.test_predict_fast import awkward_film, reference


def decoded(body: Any) -> CleanBatch | None:
    # The standard library writes what orjson will not (integers past 64 bits).
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return decode_clean(raw)


def assert_same(item: dict[str, Any], batch: CleanBatch) -> None:
    film, record = reference(item)
    assert batch.records == [record]
    assert batch.items[0].title == film.title and batch.items[0].id == film.id
    assert batch.items[0].dropped == [] == film.dropped


def test_real_films_are_taken_and_get_the_reference_records() -> None:
    films = [*tmdb_records(), *tmdb_items(3804), FILM, FILM_PLAIN]
    taken = [item for item in films if decoded({"items": [item]}) is not None]
    # Those left have a name to trim or a blank one to drop: pydantic's business.
    assert len(taken) > 0.97 * len(films)
    for item in taken[:800]:
        batch = decoded({"items": [item]})
        assert batch is not None
        assert_same(item, batch)
    # A batch: the same records as pydantic's path, film for film.
    batch = decoded({"items": taken[:MAX_ITEMS]})
    assert batch is not None
    assert batch.records == film_records(
        PredictRequest.model_validate({"items": taken[:MAX_ITEMS]})
    )


def test_only_what_pydantic_accepts_as_it_is_is_taken() -> None:
    rng = random.Random(16)
    taken = refused = declined = 0
    for _ in range(4000):
        item = awkward_film(rng)
        batch = decoded({"items": [item]})
        try:
            Film.model_validate(item)
        except ValidationError:
            assert batch is None, item
            refused += 1
            continue
        if batch is None:
            declined += 1  # pydantic's path coerces, trims or drops something
        else:
            assert_same(item, batch)
            taken += 1
    assert taken > 300 and refused > 400 and declined > 100, (taken, refused, declined)


def test_a_batch_is_taken_whole_or_not_at_all() -> None:
    padded = {**FILM, "keywords": ["heist", " padded "]}
    assert decoded({"items": [FILM, FILM_PLAIN]}) is not None
    assert decoded({"items": [FILM, padded, FILM_PLAIN]}) is None
    # pydantic's path takes that batch, trimming the name.
    assert PredictRequest.model_validate({"items": [FILM, padded]}).items[1] is not None


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b'{"items": []}',
        b'{"items": {"title": "x"}}',
        b'{"items": [{"title": "x"}]} trailing',
        b'{"items": ["x"]}',
        b'{"items": [{"title": "raw bytes \xed\xa0\x80"}]}',
        b'{"items": [{"title": "Bad \\ud800 title"}]}',
        b'{"items": [{"title": "x", "budget": 1e999}]}',
        b'{"items": [{"title": "x", "id": 1.5}]}',
        b'{"items": [{"title": "x", "budget": "12"}]}',
        b'{"items": [{"title": "x", "release_date": ""}]}',
        b'{"items": [{"title": "x", "keywords": {"keywords": [{"name": "heist"}]}}]}',
        b'{"items": [{"title": "x", "credits": {"cast": [], "crew": []}}]}',
        b'{"items": [{"title": "x"}], "interval_level": 0.99}',
        b'{"items": [{"title": "x"}], "interval_level": "0.9"}',
        b'{"items": [{"title": "x", "cast": [{"name": "A", "order": null}]}]}',
        b'{"items": [{"production_countries": [{"iso_3166_1": "US", "name": null}]}]}',
        b'{"items": [{"production_countries": [{"id": "1", "name": "US"}]}]}',
    ],
)
def test_bodies_for_pydantic_are_declined(body: bytes) -> None:
    assert decoded(body) is None


def test_limits_are_pydantics() -> None:
    at_most = {"items": [{**FILM, "genres": ["Drama"] * LIST_MAX["genres"]}] * MAX_ITEMS}
    assert decoded(at_most) is not None
    assert decoded({"items": [{**FILM, "genres": ["Drama"] * (LIST_MAX["genres"] + 1)}]}) is None
    assert decoded({"items": [FILM] * (MAX_ITEMS + 1)}) is None
    assert decoded({"items": [{**FILM, "title": "é" * 500}]}) is not None
    assert decoded({"items": [{**FILM, "title": "é" * 501}]}) is None


def test_interval_level_and_repeated_keys_read_as_pydantic_reads_them() -> None:
    for level in (None, 0.5, 0.8, 0.95, 1):
        body: dict[str, Any] = {"items": [FILM]}
        if level is not None:
            body["interval_level"] = level
        batch = decoded(body)
        if level == 1:
            assert batch is None
            continue
        assert batch is not None and batch.interval_level == level
    # A key given twice: the last one counts, on both paths.
    raw = b'{"items": [{"title": "First", "title": "Last", "budget": 5}]}'
    batch = decoded(raw)
    assert batch is not None
    request = PredictRequest.model_validate(orjson.loads(raw))
    assert batch.items[0].title == request.items[0].title == "Last"
    assert batch.records == film_records(request)
