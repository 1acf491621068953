"""`/v1/predict/*` and `/v1/models/*` over HTTP against the real app, models trained on real
films in quick mode: shapes, order, validation errors, explanations, monitoring, rollout and
rollback, and readiness without models."""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.ml import artifacts
from app.models.predict import PredictRequest
from tests.ml_support import (
    FILM,
    FILM_PLAIN,
    NBSP,
    app_settings,
    copy_artifacts,
    serve,
    tmdb_items,
    tmdb_records,
    trained_artifacts,
    versions,
)

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
async def api(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """One app for the read-only tests, serving the session's quick-trained models."""
    root, _ = trained_artifacts(tmp_path_factory)
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("predict-api"))
    async with serve(settings) as http:
        yield http


async def test_revenue_predictions_one_per_item_in_order(api: httpx.AsyncClient) -> None:
    items = [FILM, {"title": "Bare minimum"}, *tmdb_items(5)]
    response = await api.post("/v1/predict/revenue", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "revenue"
    models = (await api.get("/v1/models")).json()["models"]
    assert (
        body["model_version"] == next(m for m in models if m["name"] == "revenue")["active_version"]
    )
    predictions = body["predictions"]
    assert [p["index"] for p in predictions] == list(range(len(items)))
    assert [p["title"] for p in predictions] == [i.get("title") for i in items]
    for p in predictions:
        assert p["revenue"] > 0
        assert 0 <= p["interval"]["low"] <= p["revenue"] <= p["interval"]["high"]
        assert "contributions" not in p
    # A bigger budget, all else equal, predicts more money.
    rich = {**FILM, "budget": 250_000_000}
    poor = {**FILM, "budget": 2_000_000}
    pair = (await api.post("/v1/predict/revenue", json={"items": [rich, poor]})).json()
    assert pair["predictions"][0]["revenue"] > pair["predictions"][1]["revenue"]


async def test_hit_predictions(api: httpx.AsyncClient) -> None:
    items = [FILM, *tmdb_items(9, offset=100)]
    response = await api.post("/v1/predict/hit", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "hit" and body["model_version"]
    threshold = body["threshold"]
    assert len(body["predictions"]) == len(items)
    for i, p in enumerate(body["predictions"]):
        assert p["index"] == i
        assert 0 <= p["probability"] <= 1
        assert p["hit"] is (p["probability"] >= threshold)


async def test_explain_adds_top_contributions(api: httpx.AsyncClient) -> None:
    for path in ("/v1/predict/revenue", "/v1/predict/hit"):
        response = await api.post(path, params={"explain": "true"}, json={"items": [FILM, FILM]})
        assert response.status_code == 200, response.text
        first, second = response.json()["predictions"]
        contributions = first["contributions"]
        assert 1 <= len(contributions) <= 5
        magnitudes = [abs(c["contribution"]) for c in contributions]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert {c["feature"] for c in contributions} <= {
            "budget",
            "runtime",
            "release_date",
            "genres",
            "original_language",
            "production_companies",
            "production_countries",
            "spoken_languages",
            "keywords",
            "homepage",
            "tagline",
            "belongs_to_collection",
            "title",
            "director",
            "cast",
            "text",
            "franchise",
            "content_rating",
        }
        assert second["contributions"] == contributions
    plain = await api.post("/v1/predict/revenue", json={"items": [FILM]})
    explained = await api.post("/v1/predict/revenue?explain=true", json={"items": [FILM]})
    assert (
        plain.json()["predictions"][0]["revenue"] == explained.json()["predictions"][0]["revenue"]
    )


async def test_interval_level_widens_and_narrows_the_interval(api: httpx.AsyncClient) -> None:
    items = [FILM, *tmdb_items(4, offset=200)]
    widths: dict[float, list[float]] = {}
    for level in (None, 0.5, 0.8, 0.95):
        body: dict[str, Any] = {"items": items}
        if level is not None:
            body["interval_level"] = level
        response = await api.post("/v1/predict/revenue", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["interval_level"] == (level or 0.8)
        widths[level or 0.8] = [
            math.log1p(p["interval"]["high"]) - math.log1p(p["interval"]["low"])
            for p in answer["predictions"]
        ]
        for p in answer["predictions"]:
            assert p["interval"]["low"] <= p["revenue"] <= p["interval"]["high"]
    for a, b, c in zip(widths[0.5], widths[0.8], widths[0.95], strict=True):
        assert a < b < c
    # A level the card does not offer is a 422 naming the offered ones; hit ignores it.
    bad = await api.post("/v1/predict/revenue", json={"items": items, "interval_level": 0.55})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith(PROBLEM)
    assert "0.95" in bad.json()["detail"]
    out_of_range = await api.post(
        "/v1/predict/revenue", json={"items": items, "interval_level": 0.99}
    )
    assert out_of_range.status_code == 422
    hit = await api.post("/v1/predict/hit", json={"items": items, "interval_level": 0.95})
    assert hit.status_code == 200


async def test_plain_names_and_tmdb_objects_are_the_same_film(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/predict/revenue", json={"items": [FILM, FILM_PLAIN]})
    a, b = response.json()["predictions"]
    assert a["revenue"] == b["revenue"] and a["interval"] == b["interval"]


async def test_post_release_facts_are_ignored(api: httpx.AsyncClient) -> None:
    leaky = {**FILM, "revenue": 2_000_000_000, "popularity": 500.0, "vote_count": 20000, "id": 7}
    response = await api.post("/v1/predict/hit", json={"items": [FILM, leaky]})
    assert response.status_code == 200
    a, b = response.json()["predictions"]
    assert a["probability"] == b["probability"]


async def test_a_film_scores_the_same_alone_and_in_a_big_batch(api: httpx.AsyncClient) -> None:
    items = tmdb_items(300, offset=2000)
    batch = (await api.post("/v1/predict/revenue", json={"items": items})).json()["predictions"]
    for i in (0, 150, 299):
        alone = (await api.post("/v1/predict/revenue", json={"items": [items[i]]})).json()
        assert alone["predictions"][0]["revenue"] == pytest.approx(batch[i]["revenue"], rel=1e-6)


async def test_a_full_batch_of_1000_is_served(api: httpx.AsyncClient) -> None:
    items = tmdb_items(1000)
    response = await api.post("/v1/predict/hit", json={"items": items})
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "body.items"),
        ([{}] * 1001, "body.items"),
        ([{"budget": "a lot"}], "body.items.0.budget"),
        ([FILM, {"budget": -5}], "body.items.1.budget"),
        ([{"release_date": "next summer"}], "body.items.0.release_date"),
        ([{"runtime": 5000}], "body.items.0.runtime"),
        ([{"genres": [{"id": 28}]}], "body.items.0.genres.0"),
        ([{"genres": "Action"}], "body.items.0.genres"),
        ([{"cast": [{"character": "nobody"}]}], "body.items.0.cast.0"),
    ],
)
async def test_invalid_input_is_a_422_naming_the_field(
    api: httpx.AsyncClient, items: list[dict[str, Any]], field: str
) -> None:
    response = await api.post("/v1/predict/revenue", json={"items": items})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 422 and field in body["detail"]
    assert any(".".join(e["loc"]).startswith(field) for e in body["errors"])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"items": [{"budget": Infinity}]}', "body.items.0.budget"),
        (b'{"items": [{"title": "ok"}, {"runtime": NaN}]}', "body.items.1.runtime"),
    ],
)
async def test_non_finite_numbers_are_refused(
    api: httpx.AsyncClient, raw: bytes, field: str
) -> None:
    response = await api.post(
        "/v1/predict/hit", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert field in response.json()["detail"]


async def test_extreme_but_valid_facts_give_finite_answers(api: httpx.AsyncClient) -> None:
    items = [
        {"budget": 9e18, "release_date": "0001-01-01", "runtime": 0},
        {"budget": 0.5, "release_date": "9999-12-31", "runtime": 1000},
        {"original_language": "", "release_date": "", "genres": ["Not a TMDB genre"]},
        {"cast": [{"name": "B", "order": 7}, {"name": "A", "order": 0}], "crew": ["Someone"]},
    ]
    for path in ("/v1/predict/revenue", "/v1/predict/hit"):
        response = await api.post(path, params={"explain": "true"}, json={"items": items})
        assert response.status_code == 200, response.text
        for p in response.json()["predictions"]:
            values = [p.get("revenue", p.get("probability"))]
            values += [c["contribution"] for c in p["contributions"]]
            assert all(isinstance(v, float) and math.isfinite(v) for v in values)


async def test_missing_body_and_wrong_shape(api: httpx.AsyncClient) -> None:
    for payload in (None, {"films": [FILM]}, [FILM]):
        response = await api.post("/v1/predict/hit", json=payload)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_models_list_and_card_with_monitoring(api: httpx.AsyncClient) -> None:
    listing = await api.get("/v1/models")
    assert listing.status_code == 200
    models = {m["name"]: m for m in listing.json()["models"]}
    assert set(models) == {"revenue", "hit", "engagement"}
    for model in models.values():
        assert model["status"] == "serving" and model["active_version"] in model["versions"]
        assert model["metrics"]
    assert "rmsle" in models["revenue"]["metrics"] and "roc_auc" in models["hit"]["metrics"]

    await api.post("/v1/predict/revenue", json={"items": [FILM, FILM_PLAIN, {"title": "x"}]})
    detail = (await api.get("/v1/models/revenue")).json()
    version = detail["active_version"]
    assert detail["card"]["version"] == version and detail["card"]["name"] == "revenue"
    assert detail["fast_path"] is True
    stats = detail["monitoring"][version]
    assert stats["requests"] >= 1 and stats["predictions"] >= 3
    budget = stats["features"]["log_budget"]
    assert budget["mean"] > 0 and 0 < budget["missing_rate"] < 1
    assert "training_median" in budget
    assert stats["output"]["mean"] is not None

    missing = await api.get("/v1/models/budget")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)


async def test_rollout_and_rollback_over_http(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = copy_artifacts(tmp_path_factory)
    old, new = versions(root, "revenue")
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("rollout"))
    async with serve(settings) as http:

        async def version() -> str:
            r = await http.post("/v1/predict/revenue", json={"items": [FILM]})
            return str(r.json()["model_version"])

        assert await version() == new
        rolled = await http.post("/v1/models/revenue/activate", json={"version": old})
        assert rolled.status_code == 200, rolled.text
        body = rolled.json()
        assert {k: body[k] for k in ("name", "active_version", "previous_version")} == {
            "name": "revenue",
            "active_version": old,
            "previous_version": new,
        }
        # Trained without MLflow: there is no `champion` alias to move.
        assert body["mlflow"]["status"] == "skipped"
        assert await version() == old
        # A corrupt version is refused with 409 and the current one keeps answering.
        broken = root / "revenue" / "29990101T000000Z"
        shutil.copytree(root / "revenue" / new, broken)
        (broken / artifacts.MODEL_FILE).write_bytes(b"not a pickle")
        refused = await http.post(
            "/v1/models/revenue/activate", json={"version": "29990101T000000Z"}
        )
        assert refused.status_code == 409
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert "still serving " + old in refused.json()["detail"]
        assert await version() == old
        # Roll forward by moving the pointer and reloading, as a deploy script would.
        artifacts.write_active(root, "revenue", new)
        reloaded = await http.post("/v1/models/revenue/reload")
        assert reloaded.status_code == 200 and reloaded.json()["active_version"] == new
        assert await version() == new
        # Unknown version / bad version string.
        assert (
            await http.post("/v1/models/revenue/activate", json={"version": "20000101T000000Z"})
        ).status_code == 404
        assert (
            await http.post("/v1/models/revenue/activate", json={"version": "latest"})
        ).status_code == 422
        # Predictions keep flowing while versions flip.
        flips = [
            http.post("/v1/models/revenue/activate", json={"version": v})
            for v in (old, new, old, new)
        ]
        calls = [http.post("/v1/predict/revenue", json={"items": [FILM]}) for _ in range(12)]
        results = await asyncio.gather(*flips, *calls)
        assert all(r.status_code == 200 for r in results)
        assert {r.json()["model_version"] for r in results[4:]} <= {old, new}


async def test_without_models_ready_says_so_and_predict_is_503(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp("no-models")
    settings = app_settings(mongodb_uri, workdir / "artifacts", workdir)
    async with serve(settings) as http:
        ready = await http.get("/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert "models" in body.get("detail", "models")
        assert body["checks"]["models"].startswith("not ready")
        assert "revenue" in body["checks"]["models"]
        assert body["checks"]["database"] == "ok"
        for path in ("/v1/predict/revenue", "/v1/predict/hit"):
            response = await http.post(path, json={"items": [FILM]})
            assert response.status_code == 503
            assert response.headers["content-type"].startswith(PROBLEM)
            assert "unavailable" in response.json()["detail"]
        listing = await http.get("/v1/models")
        assert listing.status_code == 200
        assert {m["status"] for m in listing.json()["models"]} == {"unavailable"}
        assert (await http.get("/v1/models/hit")).status_code == 503


async def test_predictions_are_counted_per_model_version_in_metrics(
    api: httpx.AsyncClient,
) -> None:
    def counted(text: str, version: str) -> float:
        prefix = f'predictions_total{{model="hit",version="{version}"}} '
        line = next((ln for ln in text.splitlines() if ln.startswith(prefix)), None)
        return float(line.removeprefix(prefix)) if line else 0.0

    first = await api.post("/v1/predict/hit", json={"items": [FILM, FILM, FILM]})
    version = first.json()["model_version"]
    before = counted((await api.get("/metrics")).text, version)
    await api.post("/v1/predict/hit", json={"items": [FILM, FILM]})
    assert counted((await api.get("/metrics")).text, version) == before + 2


# --- real TMDB records: list items whose name is blank are dropped, never fatal ----------------


def counter(text: str, name: str, labels: str) -> float:
    prefix = f"{name}{{{labels}}} "
    line = next((ln for ln in text.splitlines() if ln.startswith(prefix)), None)
    return float(line.removeprefix(prefix)) if line else 0.0


def test_a_blank_name_is_dropped_by_validation_not_refused() -> None:
    film = {
        **FILM,
        "keywords": [{"id": 1, "name": "heist"}, {"id": 13091, "name": NBSP}, "space"],
        "genres": ["  ", {"id": 28, "name": "Action"}],
        "cast": [{"name": NBSP, "order": 0}, {"name": "Zendaya", "order": 1}],
        "belongs_to_collection": {"id": 9, "name": " "},
    }
    parsed = PredictRequest.model_validate({"items": [film, FILM]}).items
    assert [k if isinstance(k, str) else k["name"] for k in parsed[0].keywords] == [
        "heist",
        "space",
    ]
    assert parsed[0].genres == [{"id": 28, "name": "Action"}]
    assert [c if isinstance(c, str) else c["name"] for c in parsed[0].cast] == ["Zendaya"]
    assert parsed[0].belongs_to_collection is None
    assert parsed[0].dropped == [
        ("genres", 0),
        ("keywords", 1),
        ("belongs_to_collection", None),
        ("cast", 0),
    ]
    assert parsed[1].dropped == []
    # A film refused for another reason is refused for that reason alone, as posted.
    with pytest.raises(ValidationError) as refused:
        PredictRequest.model_validate({"items": [FILM, {**film, "budget": -5}]})
    assert [e["loc"] for e in refused.value.errors()] == [("items", 1, "budget")]


async def test_a_nbsp_keyword_is_dropped_and_counted_not_a_422(api: httpx.AsyncClient) -> None:
    blank = {
        **FILM,
        "keywords": [*FILM["keywords"], {"id": 13091, "name": NBSP}],
        "crew": [*FILM["crew"], {"name": "", "job": "Director"}],
    }
    before = (await api.get("/metrics")).text
    for path in ("/v1/predict/revenue", "/v1/predict/hit"):
        response = await api.post(path, json={"items": [FILM, blank]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["dropped_items"] == 2
        clean, dropped = body["predictions"]
        assert "warnings" not in clean
        assert dropped["warnings"] == [
            "keywords.2: blank name, item dropped",
            "crew.2: blank name, item dropped",
        ]
        # Dropping the blank items leaves the very film that was sent without them.
        score = "revenue" if "revenue" in clean else "probability"
        assert dropped[score] == clean[score]
    after = (await api.get("/metrics")).text
    for field in ("keywords", "crew"):
        name = "predict_list_items_dropped_total"
        assert (
            counter(after, name, f'field="{field}"')
            == counter(before, name, f'field="{field}"') + 2
        )
    plain = await api.post("/v1/predict/hit", json={"items": [FILM]})
    assert plain.json()["dropped_items"] == 0


@pytest.mark.parametrize("path", ["/v1/predict/revenue", "/v1/predict/hit"])
async def test_every_train_film_as_a_tmdb_record_is_accepted_in_batches_of_1000(
    api: httpx.AsyncClient, path: str
) -> None:
    records = tmdb_records()
    assert len(records) == 3804
    batches = [records[start : start + 1000] for start in range(0, len(records), 1000)]
    responses = [await api.post(path, json={"items": batch}) for batch in batches]
    assert [r.status_code for r in responses] == [200] * 4, [r.text[:300] for r in responses]
    dropped, warned = 0, {}
    for batch, response in zip(batches, responses, strict=True):
        body = response.json()
        assert len(body["predictions"]) == len(batch)
        dropped += body["dropped_items"]
        for p in body["predictions"]:
            if "warnings" in p:
                warned[batch[p["index"]]["id"]] = p["warnings"]
    # The one blank name in the file: "Good bye, Lenin!" has a keyword named by a lone NBSP.
    assert dropped == 1
    assert list(warned) == [338] and warned[338][0].endswith("blank name, item dropped")


async def test_a_record_straight_from_the_tmdb_api_scores_like_the_flat_film(
    api: httpx.AsyncClient,
) -> None:
    """`/movie/{id}?append_to_response=credits,keywords` wraps keywords and nests cast and
    crew under `credits`; posted as is, it is the same film as the flat shape."""
    flat = tmdb_items(1, offset=7)[0]
    api_record = {
        **{k: v for k, v in flat.items() if k not in ("keywords", "cast", "crew")},
        "id": 550,
        "popularity": 61.4,
        "keywords": {
            "id": 550,
            "keywords": [{"id": i, "name": n} for i, n in enumerate(flat["keywords"])],
        },
        "credits": {
            "id": 550,
            "cast": [
                {"id": i, "name": n, "character": "x", "order": i, "credit_id": "c"}
                for i, n in enumerate(flat["cast"])
            ],
            "crew": [
                {"id": 9, "name": c["name"], "job": c["job"], "department": "Directing"}
                for c in flat["crew"]
            ],
        },
    }
    assert flat["cast"] and flat["crew"] and flat["keywords"]
    without_people = {**flat, "cast": [], "crew": [], "keywords": []}
    for path, score in (("/v1/predict/revenue", "revenue"), ("/v1/predict/hit", "probability")):
        response = await api.post(path, json={"items": [flat, api_record, without_people]})
        assert response.status_code == 200, response.text
        same, nested, bare = (p[score] for p in response.json()["predictions"])
        assert nested == same
        assert bare != same  # the unwrapped lists really reached the model


@pytest.mark.parametrize(
    "raw",
    [
        b'{"items": [{"title": "Bad \\ud800 title", "budget": 1000000}]}',
        b'{"items": [{"title": "ok", "genres": ["Dra\\udc00ma"]}]}',
        b'{"items": [{"title": "ok", "keywords": [{"name": "x", "\\ud800": 1}]}]}',
        b'{"items": [{"title": "raw bytes \xed\xa0\x80"}]}',
    ],
)
async def test_a_lone_surrogate_is_a_422_not_a_500(api: httpx.AsyncClient, raw: bytes) -> None:
    """The fast path checks strings without pydantic and took an unpaired surrogate, which
    then failed the JSON answer (500). Such a body is not Unicode text: a 422."""
    for path in ("/v1/predict/revenue", "/v1/predict/engagement"):
        response = await api.post(path, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert "surrogate" in response.text


async def test_a_surrogate_pair_is_one_character(api: httpx.AsyncClient) -> None:
    raw = b'{"items": [{"title": "Film \\ud83c\\udfac", "budget": 1000000}]}'
    response = await api.post(
        "/v1/predict/hit", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["title"] == "Film \U0001f3ac"
