"""The `engagement` model (votes and rating from pre-release facts): its training (card,
report, MLflow, baseline, intervals), its leakage guard, and `POST /v1/predict/engagement`
end to end over HTTP (values checked against the saved pipeline, order, roles, rollout and
rollback, and an artifacts directory from before the model existed)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest

from app.main import create_app
from app.ml import artifacts
from app.ml.card import ModelCard
from app.ml.engagement import MIN_RATED_VOTES, OUTPUTS, EngagementFeatures
from app.ml.features import film_record
from app.ml.registry import ModelRegistry, load_version
from app.services.credentials import Role
from tests.ml_support import (
    FILM,
    FILM_PLAIN,
    app_settings,
    copy_artifacts,
    quick_options,
    real_dataset,
    serve,
    small_dataset,
    trained_artifacts,
    versions,
)
from tests.security_support import user_token
from tests.support import in_process
from training.engagement import genre_year_baseline, population
from training.train import train_models
from training.types import TrainedModel

PROBLEM = "application/problem+json"
PATH = "/v1/predict/engagement"
PRE_RENAME = Path(__file__).parent / "fixtures" / "artifacts-pre-rename"


def _engagement(runs: list[list[TrainedModel]]) -> list[TrainedModel]:
    return [t for run in runs for t in run if t.name == "engagement"]


@pytest.fixture(scope="module")
async def api(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    root, _ = trained_artifacts(tmp_path_factory)
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("engagement-api"))
    async with serve(settings) as http:
        yield http


# --- training: card, report, MLflow -------------------------------------------------------------


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedModel]:
    """One engagement version trained with its report and MLflow run."""
    work = tmp_path_factory.mktemp("engagement-train")
    (trained,) = train_models(
        small_dataset(),
        work / "artifacts",
        quick_options(
            models=("engagement",),
            report=True,
            mlflow=True,
            mlflow_dir=work / "mlruns",
            experiment="tests",
        ),
        say=lambda _m: None,
    )
    return work / "mlruns", trained


def test_training_writes_a_card_with_both_outputs_baseline_and_coverage(
    reported: tuple[Path, TrainedModel],
) -> None:
    _, trained = reported
    assert trained.name == "engagement" and trained.activated
    root = trained.path.parent.parent
    assert artifacts.read_active(root, "engagement") == trained.version
    card = ModelCard.model_validate_json((trained.path / artifacts.CARD_FILE).read_text())
    assert card.name == "engagement" and card.task == "multi_regression"
    assert card.data.split.strategy == "time"
    info = card.data.split
    assert info.train_until is not None and info.test_from is not None
    assert info.train_until <= info.test_from
    films = population(small_dataset().records)
    assert card.data.rows == len(films) == info.train + info.validation + info.test
    assert card.outputs is not None and set(card.outputs) == set(OUTPUTS)
    assert card.outputs["vote_count"].transform == "log1p"
    assert card.outputs["vote_average"].bounds == (0.0, 10.0)
    for name, metric in (("vote_count", "rmsle"), ("vote_average", "rmse")):
        m = card.metrics[name]
        assert m[metric] > 0 and m["baseline"][metric] > 0
        assert m[f"{metric}_gain_vs_baseline"] == pytest.approx(m["baseline"][metric] - m[metric])
        assert set(m["coverage_by_level"]) == {"50", "80", "95"}
        levels = m["coverage_by_level"]
        assert 0 < levels["50"] <= levels["80"] <= levels["95"] <= 1
        spec = card.outputs[name].interval
        lo, hi = spec.offsets["all"]
        assert lo < 0 < hi and spec.quantiles == (0.1, 0.9)
        assert spec.coverage_test == m["interval_coverage"] == levels["80"]
    # The model beats the naive genre/year median on votes, even in quick mode on 1,200 films.
    assert card.metrics["vote_count"]["rmsle"] < card.metrics["vote_count"]["baseline"]["rmsle"]
    ablation = card.metrics["vote_history_ablation"]
    assert set(ablation) == {
        "vote_count_rmsle_with_vote_history",
        "vote_count_rmsle_without_vote_history",
        "vote_average_rmse_with_vote_history",
        "vote_average_rmse_without_vote_history",
    }
    assert card.params["vote_history"] == card.metrics["vote_history"]
    assert {c.family.split(":")[0] for c in card.candidates} == set(OUTPUTS)
    # Each output tried recency weights (quick mode: unweighted or a 10-year half-life) and
    # keeps a half-life only when it beat the unweighted fit on validation.
    for name, metric in (("vote_count", "rmsle"), ("vote_average", "rmse")):
        recency = card.metrics["recency"][name]
        scores = recency[f"validation_{metric}"]
        assert set(scores) == {"none", "10"}
        assert recency["half_life"] in (None, 10.0)
        if recency["half_life"] is None:
            assert scores["none"] <= scores["10"]
        else:
            assert scores["10"] < scores["none"]
        assert card.params[name]["recency_half_life_years"] == recency["half_life"]
        chosen = min(scores.values())
        assert card.validation_metrics[f"{name}_{metric}"] == pytest.approx(chosen)
    # Leakage guard at the card level: no feature derives from a post-release fact.
    assert not {"popularity", "vote_count", "vote_average", "revenue"} & {
        f.group for f in card.features
    }
    assert not {"vote_count", "vote_average", "popularity", "revenue"} & {
        f.name for f in card.features
    }


def test_report_and_mlflow_run(reported: tuple[Path, TrainedModel]) -> None:
    from mlflow.tracking import MlflowClient

    mlruns, trained = reported
    page = (trained.path / artifacts.REPORT_FILE).read_text()
    assert page.count("data:image/png;base64,") >= 7
    for caption in ("Interval coverage", "vote_count: predicted vs actual", "baseline"):
        assert caption in page
    info = trained.card.mlflow
    assert info is not None and info.tracking_uri is not None and str(mlruns) in info.tracking_uri
    client = MlflowClient(tracking_uri=info.tracking_uri)
    run = client.get_run(info.run_id)
    assert run.data.tags["model"] == "engagement" and run.data.tags["version"] == trained.version
    assert math.isclose(
        run.data.metrics["test_vote_count_rmsle"], trained.card.metrics["vote_count"]["rmsle"]
    )
    assert info.registered_model == "tmdb-analytics-engagement"
    assert info.registered_version is not None


def test_baseline_is_the_genre_median_over_recent_years() -> None:
    train = [
        {"genres": ["Drama"], "release_date": f"{year}-01-01"}
        for year in (2000, 2001, 2002, 2003, 2004, 2005, 1980)
    ] + [{"genres": ["Horror"], "release_date": "2004-01-01"}]
    values = np.asarray([1, 2, 3, 4, 5, 6, 100, 50], dtype=np.float64)
    known = np.ones(len(values), dtype=bool)
    test = [
        {"genres": ["Drama", "Comedy"], "release_date": "2005-06-01"},  # 2001-2005: 2..6
        {"genres": ["Drama"], "release_date": "1985-01-01"},  # too few: all Drama films
        {"genres": ["Western"], "release_date": "2005-01-01"},  # unknown genre: everyone
    ]
    got = genre_year_baseline(train, values, known, test)
    assert got.tolist() == [4.0, float(np.median(values[:7])), float(np.median(values))]


# --- leakage guard ------------------------------------------------------------------------------


def _film(title: str, released: str, votes: int, rating: float, director: str) -> dict[str, Any]:
    rec = film_record(
        {
            "title": title,
            "budget": 10_000_000,
            "revenue": 30_000_000,
            "release_date": released,
            "genres": ["Drama"],
            "crew": [{"name": director, "job": "Director"}],
            "imdb": {"actors": ["Lead One"]},
        }
    )
    return {**rec, "vote_count": votes, "vote_average": rating, "popularity": 12.5}


def _votes(step: EngagementFeatures, X: np.ndarray, kind: str) -> np.ndarray:
    names = [f"{kind}_prior_mean_log_votes", f"{kind}_prior_mean_rating"]
    return X[:, [step.feature_names_.index(n) for n in names]]


def test_vote_history_uses_only_earlier_films() -> None:
    films = [
        _film("First", "2000-01-01", 99, 8.0, "Dee"),
        _film("Second", "2005-01-01", 9_999, 3.0, "Dee"),
        _film("Few votes", "2006-01-01", MIN_RATED_VOTES - 1, 10.0, "Dee"),
        _film("Third", "2010-01-01", 5, 1.0, "Dee"),
    ]
    step = EngagementFeatures().fit(films)
    X = _votes(step, step.transform(films), "director")
    assert np.isnan(X[0]).all()  # nobody's earlier film
    assert X[1].tolist() == pytest.approx([math.log1p(99), 8.0])
    # Third: three earlier films; the rating ignores the film with too few votes.
    expected_votes = np.mean([math.log1p(99), math.log1p(9_999), math.log1p(MIN_RATED_VOTES - 1)])
    assert X[3].tolist() == pytest.approx([expected_votes, 5.5])


def test_a_films_own_and_later_outcomes_never_change_its_features() -> None:
    """Fit on real films; change the votes, rating, popularity and revenue of every film
    released on or after a date D: no film released on or before D (those of day D included,
    whose own outcomes changed) sees its features move, in training or when served."""
    records = sorted(
        (r for r in real_dataset().records[:800] if r.get("release_date")),
        key=lambda r: (r["release_date"], r["id"]),
    )
    cutoff = records[len(records) // 2]["release_date"]

    def leaked(r: dict[str, Any]) -> dict[str, Any]:
        votes = r.get("vote_count") or 0
        return {
            **r,
            "vote_count": votes * 7 + 3,
            "vote_average": 9.9,
            "popularity": 1e6,
            "revenue": 1.0e10,
        }

    changed = [leaked(r) if r["release_date"] >= cutoff else r for r in records]
    upto = [i for i, r in enumerate(records) if r["release_date"] <= cutoff]
    assert any(records[i]["release_date"] == cutoff for i in upto)
    first = EngagementFeatures().fit(records)
    second = EngagementFeatures().fit(changed)
    np.testing.assert_array_equal(
        first.transform([records[i] for i in upto]), second.transform([changed[i] for i in upto])
    )
    # Served: a film's own outcomes are never read.
    np.testing.assert_array_equal(first.transform(records), first.transform(changed))
    # ...while earlier outcomes do move later films' features (the guard is not vacuous).
    later = [i for i, r in enumerate(records) if r["release_date"] > cutoff]
    shifted = [{**r, "vote_average": 1.0} if r["release_date"] <= cutoff else r for r in records]
    third = EngagementFeatures().fit(shifted)
    before = first.transform([records[i] for i in later])
    after = third.transform([records[i] for i in later])
    assert not np.allclose(np.nan_to_num(before), np.nan_to_num(after))


# --- serving over HTTP ---------------------------------------------------------------------------


def _stored(film: dict[str, Any]) -> dict[str, Any]:
    """FILM_PLAIN as the stored document the feature code reads (credits as objects)."""
    return {
        **film,
        "cast": [{"name": n, "order": i} for i, n in enumerate(film["cast"])],
        "crew": [c for c in film["crew"] if isinstance(c, dict)],
    }


def _expected(root: Path, version: str, film: dict[str, Any]) -> dict[str, Any]:
    """The answer computed from the saved pipeline and card alone, not the service."""
    directory = root / "engagement" / version
    pipeline = joblib.load(directory / artifacts.MODEL_FILE)
    card = ModelCard.model_validate_json((directory / artifacts.CARD_FILE).read_text())
    assert card.outputs is not None
    record = film_record(_stored(film))
    log_votes, rating = pipeline.predict([record])[0]
    group = "budget_known" if record["budget"] is not None else "budget_unknown"
    c_lo, c_hi = card.outputs["vote_count"].interval.offsets[group]
    r_lo, r_hi = card.outputs["vote_average"].interval.offsets[group]
    return {
        "vote_count": round(math.expm1(log_votes)),
        "vote_average": round(min(10.0, max(0.0, rating)), 2),
        "intervals": {
            "vote_count": {
                "low": math.floor(max(0.0, math.expm1(log_votes + c_lo))),
                "high": math.ceil(math.expm1(log_votes + c_hi)),
            },
            "vote_average": {
                "low": round(min(10.0, max(0.0, rating + r_lo)), 2),
                "high": round(min(10.0, max(0.0, rating + r_hi)), 2),
            },
        },
    }


async def test_predictions_match_the_saved_pipeline_one_per_film_in_order(
    api: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, runs = trained_artifacts(tmp_path_factory)
    active = artifacts.read_active(root, "engagement")
    assert active == _engagement(runs)[-1].version
    small = {**FILM_PLAIN, "title": "Small", "budget": None, "release_date": "1999-03-01"}
    items = [FILM_PLAIN, small, {"title": "Bare"}, FILM]
    response = await api.post(PATH, json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "engagement" and body["model_version"] == active
    assert body["interval_level"] == pytest.approx(0.8)
    predictions = body["predictions"]
    assert [p["index"] for p in predictions] == [0, 1, 2, 3]
    assert [p["title"] for p in predictions] == [
        "Interstellar Heist",
        "Small",
        "Bare",
        FILM["title"],
    ]
    for p in predictions:
        assert set(p) >= {"vote_count", "vote_average", "intervals"}
        votes, rating = p["intervals"]["vote_count"], p["intervals"]["vote_average"]
        assert 0 <= votes["low"] <= p["vote_count"] <= votes["high"]
        assert 0 <= rating["low"] <= p["vote_average"] <= rating["high"] <= 10
        assert float(p["vote_count"]).is_integer()
    for film, p in ((FILM_PLAIN, predictions[0]), (small, predictions[1])):
        expected = _expected(root, active, film)
        # Compiled trees and scikit-learn agree to 1e-6 in log votes: a vote either way at most.
        assert abs(p["vote_count"] - expected["vote_count"]) <= 1
        assert p["vote_average"] == pytest.approx(expected["vote_average"], abs=0.011)
        for side in ("low", "high"):
            got = p["intervals"]["vote_count"][side]
            assert abs(got - expected["intervals"]["vote_count"][side]) <= 1
        for side in ("low", "high"):
            assert p["intervals"]["vote_average"][side] == pytest.approx(
                expected["intervals"]["vote_average"][side], abs=0.011
            )
    # TMDB objects and plain names are the same film.
    assert {k: v for k, v in predictions[3].items() if k not in ("index", "title")} == {
        k: v for k, v in predictions[0].items() if k not in ("index", "title")
    }


async def test_a_film_scores_the_same_alone_and_in_a_batch_and_outcomes_are_ignored(
    api: httpx.AsyncClient,
) -> None:
    from tests.ml_support import tmdb_items

    items = tmdb_items(300, offset=1000)
    batch = (await api.post(PATH, json={"items": items})).json()["predictions"]
    assert len(batch) == 300
    alone = (await api.post(PATH, json={"items": [items[7]]})).json()["predictions"][0]
    assert {k: v for k, v in alone.items() if k != "index"} == {
        k: v for k, v in batch[7].items() if k != "index"
    }
    # Post-release facts in the body (a full TMDB record) change nothing.
    leaky = {**items[7], "vote_count": 10**6, "vote_average": 9.9, "popularity": 1e4}
    leaky["revenue"] = 2e9
    again = (await api.post(PATH, json={"items": [leaky]})).json()["predictions"][0]
    assert again == alone


async def test_models_list_and_card_show_engagement(api: httpx.AsyncClient) -> None:
    listing = (await api.get("/v1/models")).json()["models"]
    models = {m["name"]: m for m in listing}
    assert "engagement" in models
    engagement = models["engagement"]
    assert engagement["status"] == "serving"
    assert engagement["active_version"] in engagement["versions"]
    assert "rmsle" in engagement["metrics"]["vote_count"]
    await api.post(PATH, json={"items": [FILM, FILM_PLAIN]})
    detail = (await api.get("/v1/models/engagement")).json()
    assert detail["name"] == "engagement" and detail["card"]["task"] == "multi_regression"
    assert set(detail["card"]["outputs"]) == set(OUTPUTS)
    assert detail["fast_path"] is True
    stats = detail["monitoring"][detail["active_version"]]
    assert stats["predictions"] >= 2


async def test_invalid_bodies_are_422(api: httpx.AsyncClient) -> None:
    payloads: list[dict[str, Any]] = [{"items": []}, {"items": [{"budget": -1}]}, {"films": [FILM]}]
    for payload in payloads:
        response = await api.post(PATH, json=payload)
        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM)
    too_many = await api.post(PATH, json={"items": [{"title": str(i)} for i in range(1001)]})
    assert too_many.status_code == 422  # the body's own bound (MAX_ITEMS)


async def test_compiled_scorer_matches_scikit_learn(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root, runs = trained_artifacts(tmp_path_factory)
    films = [film_record(r) for r in real_dataset().records[1500:1700]]
    for trained in _engagement(runs):
        model = load_version(root, "engagement", trained.version)
        assert model.fast_scorer is not None
        X = model.transform(films)
        reference = model.reference_scorer(X)
        assert reference.shape == (len(films), 2)
        np.testing.assert_allclose(model.fast_scorer(X), reference, rtol=1e-6, atol=1e-6)


async def test_rollout_and_rollback_over_http(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = copy_artifacts(tmp_path_factory)
    old, new = versions(root, "engagement")
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("engagement-rollout"))
    async with serve(settings) as http:

        async def version() -> str:
            r = await http.post(PATH, json={"items": [FILM]})
            assert r.status_code == 200, r.text
            return str(r.json()["model_version"])

        assert await version() == new
        rolled = await http.post("/v1/models/engagement/activate", json={"version": old})
        assert rolled.status_code == 200, rolled.text
        assert {k: v for k, v in rolled.json().items() if k != "mlflow"} == {
            "name": "engagement",
            "active_version": old,
            "previous_version": new,
        }
        assert await version() == old
        assert artifacts.read_active(root, "engagement") == old
        # A revenue artifact is no engagement model: refused, the old one keeps serving.
        wrong = root / "engagement" / "29990101T000000Z"
        shutil.copytree(root / "revenue" / versions(root, "revenue")[-1], wrong)
        refused = await http.post(
            "/v1/models/engagement/activate", json={"version": "29990101T000000Z"}
        )
        assert refused.status_code == 409 and "still serving " + old in refused.json()["detail"]
        assert await version() == old
        artifacts.write_active(root, "engagement", new)
        reloaded = await http.post("/v1/models/engagement/reload")
        assert reloaded.status_code == 200 and reloaded.json()["active_version"] == new
        assert await version() == new


async def test_an_artifacts_directory_without_engagement_still_serves_the_others(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Artifacts trained before the engagement model existed (committed at df0b079): the
    service is ready, serves revenue and hit, and answers engagement with a clear 503."""
    workdir = tmp_path_factory.mktemp("no-engagement")
    root = workdir / "artifacts"
    shutil.copytree(PRE_RENAME, root)
    registry = ModelRegistry(root)
    await registry.load_all()
    assert await registry.readiness() == "ok"
    settings = app_settings(mongodb_uri, root, workdir)
    async with serve(settings) as http:
        ready = await http.get("/ready")
        assert ready.json()["checks"]["models"] == "ok"
        assert (await http.post("/v1/predict/revenue", json={"items": [FILM]})).status_code == 200
        response = await http.post(PATH, json={"items": [FILM]})
        assert response.status_code == 503
        assert response.headers["content-type"].startswith(PROBLEM)
        assert "Retry-After" in response.headers
        detail = response.json()["detail"]
        assert "engagement" in detail and "tmdb-analytics train" in detail
        models = {m["name"]: m for m in (await http.get("/v1/models")).json()["models"]}
        assert models["engagement"]["status"] == "unavailable"
        assert models["revenue"]["status"] == "serving"
        assert (await http.get("/v1/models/engagement")).status_code == 503
        missing = await http.post(
            "/v1/models/engagement/activate", json={"version": "20250101T000000Z"}
        )
        assert missing.status_code == 404


async def test_engagement_needs_the_predictor_role(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root, _ = trained_artifacts(tmp_path_factory)
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("engagement-roles"))
    viewer = await user_token(settings, "vic", Role.viewer)
    predictor = await user_token(settings, "pat", Role.predictor)
    async with in_process(create_app(settings)) as http:
        anonymous = await http.post(PATH, json={"items": [FILM]})
        assert anonymous.status_code == 401
        refused = await http.post(
            PATH, json={"items": [FILM]}, headers={"Authorization": f"Bearer {viewer}"}
        )
        assert refused.status_code == 403 and "predictor" in refused.json()["detail"]
        allowed = await http.post(
            PATH, json={"items": [FILM]}, headers={"Authorization": f"Bearer {predictor}"}
        )
        assert allowed.status_code == 200, allowed.text
        assert json.loads(allowed.text)["predictions"][0]["vote_count"] >= 0


# --- explanations ---------------------------------------------------------------------------


def _mixed_pipeline() -> tuple[Any, list[dict[str, Any]]]:
    """An engagement pipeline with a tree for votes and a ridge pipeline for the rating, the
    two kinds of estimator training picks among, fitted on real films."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from app.ml.engagement import EngagementRegressor

    records = population(small_dataset().records)
    y = np.asarray(
        [[r["vote_count"], r.get("vote_average") or float("nan")] for r in records], dtype=float
    )
    ridge = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
            ("model", Ridge(alpha=10.0)),
        ]
    )
    pipeline = Pipeline(
        [
            ("features", EngagementFeatures()),
            (
                "model",
                EngagementRegressor(
                    HistGradientBoostingRegressor(max_iter=60, random_state=0), ridge
                ),
            ),
        ]
    ).fit(records, y)
    return pipeline, records


def test_engagement_explanations_match_independent_computations() -> None:
    from app.ml.engagement_explain import EngagementExplainer
    from app.ml.explain import GroupOcclusion

    pipeline, records = _mixed_pipeline()
    step = pipeline[0]
    regressor = pipeline[1]
    explainer = EngagementExplainer.build(
        pipeline, GroupOcclusion(step.feature_groups_, step.reference_)
    )
    assert explainer.methods == {"vote_count": "shap", "vote_average": "occlusion"}
    X = step.transform(records[:40])
    scores, (votes, rating) = explainer.contributions(X, regressor.predict)
    np.testing.assert_allclose(scores, regressor.predict(X))
    groups = list(dict.fromkeys(step.feature_groups_))
    assert votes.shape == rating.shape == (40, len(groups))
    # SHAP: a film's contributions add up to its prediction minus the average prediction.
    tree = regressor.estimators_[0]
    import shap  # type: ignore[import-untyped]

    base = float(np.ravel(shap.TreeExplainer(tree).expected_value)[0])
    np.testing.assert_allclose(votes.sum(axis=1), scores[:, 0] - base, atol=1e-6)
    # Occlusion, recomputed here: each field's columns set to the typical film's, re-scored.
    columns = np.asarray(step.feature_groups_)
    for j, field in enumerate(groups):
        occluded = X.copy()
        mask = columns == field
        occluded[:, mask] = np.asarray(step.reference_)[mask]
        expected = scores[:, 1] - regressor.estimators_[1].predict(occluded)
        np.testing.assert_allclose(rating[:, j], expected, atol=1e-9)
    # The ridge is linear: the occlusion contributions add up to prediction - typical film.
    typical = regressor.estimators_[1].predict(np.asarray(step.reference_)[None, :])[0]
    np.testing.assert_allclose(rating.sum(axis=1), scores[:, 1] - typical, atol=1e-9)
    top = explainer.top(0, votes[0], 5)
    assert len(top) <= 5 and [t["feature"] for t in top] == [
        groups[i] for i in np.argsort(-np.abs(votes[0]))[: len(top)]
    ]


def test_each_output_learns_with_its_own_recency_weights() -> None:
    """`EngagementRegressor.fit(X, y, sample_weight)` gives column k of the weights to output
    k's estimator (the rating one on the rated films only): the same models as fitting each
    estimator alone with those weights, and not the unweighted ones."""
    from sklearn.base import clone

    from training.candidates import recency_weights
    from training.engagement import recency_fit_params

    pipeline, records = _mixed_pipeline()
    y = np.asarray(
        [[r["vote_count"], r.get("vote_average") or float("nan")] for r in records], dtype=float
    )
    params = recency_fit_params(records, {"vote_count": 6.0, "vote_average": None})
    W = params["model__sample_weight"]
    expected = recency_weights(records, 6.0)
    assert expected is not None
    np.testing.assert_allclose(W[:, 0], expected)
    assert (W[:, 1] == 1.0).all()
    assert recency_fit_params(records, {"vote_count": None, "vote_average": None}) == {}
    weighted = clone(pipeline).fit(records, y, **params)
    X = weighted[0].transform(records[:50])
    tree = clone(pipeline[1].vote_count).fit(
        weighted[0].transform(records), np.log1p(y[:, 0]), sample_weight=W[:, 0]
    )
    np.testing.assert_allclose(weighted[1].estimators_[0].predict(X), tree.predict(X))
    unweighted = pipeline[1].estimators_[0].predict(X)
    assert not np.allclose(weighted[1].estimators_[0].predict(X), unweighted)
    # The rating model saw weights of 1: the same as the unweighted fit.
    np.testing.assert_allclose(
        weighted[1].estimators_[1].predict(X), pipeline[1].estimators_[1].predict(X)
    )


async def test_explain_adds_contributions_per_output_and_changes_no_prediction(
    api: httpx.AsyncClient,
) -> None:
    items = [FILM_PLAIN, {"title": "Bare"}, FILM]
    plain = (await api.post(PATH, json={"items": items})).json()
    response = await api.post(PATH, params={"explain": "true"}, json={"items": items})
    assert response.status_code == 200, response.text
    explained = response.json()
    assert set(explained["explanation_methods"]) == set(OUTPUTS)
    assert set(explained["explanation_methods"].values()) <= {"shap", "occlusion"}
    card = (await api.get("/v1/models/engagement")).json()
    fields = {f["group"] for f in card["card"]["features"]}
    for before, after in zip(plain["predictions"], explained["predictions"], strict=True):
        assert {k: v for k, v in after.items() if k != "contributions"} == before
        assert set(after["contributions"]) == set(OUTPUTS)
        for output in OUTPUTS:
            top = after["contributions"][output]
            assert 1 <= len(top) <= 5
            assert {t["feature"] for t in top} <= fields
            sizes = [abs(t["contribution"]) for t in top]
            assert sizes == sorted(sizes, reverse=True)
    # A well-described film is moved by more than one field for each output.
    assert all(len(explained["predictions"][0]["contributions"][o]) > 1 for o in OUTPUTS)
    assert "explanation_methods" not in plain
