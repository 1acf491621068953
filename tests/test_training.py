"""Training on real films into temporary directories: artifacts, model card, report, MLflow
run, the database and CSV paths, the CLI, and the leakage guard of the track-record features."""

from __future__ import annotations

import csv
import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from typer.testing import CliRunner

from app.db import Document
from app.ml import artifacts
from app.ml.card import ModelCard
from app.ml.estimators import AveragedRegressor, ConstantDollarRegressor, fit_weighted
from app.ml.features import FEATURE_SCHEMA_VERSION, TRACK_KINDS, FilmFeatures, film_record
from app.ml.prerelease import SCHEMA_VERSION as PRERELEASE_SCHEMA
from app.services.csv_io import import_tmdb_csv
from app.settings import Settings
from tests.ml_support import quick_options, real_dataset, small_dataset
from tests.support import TMDB_TRAIN_CSV, require_shared
from training import evaluate
from training.candidates import TASKS, families, recency_weights
from training.data import load_from_csv, load_from_db
from training.selection import choose_calibration
from training.split import time_split
from training.train import train_models
from training.types import TrainedModel

# --- a full quick run: artifacts, card, report, MLflow ----------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[TrainedModel]]:
    work = tmp_path_factory.mktemp("training")
    root, mlruns = work / "artifacts", work / "mlruns"
    trained = train_models(
        small_dataset(),
        root,
        # The engagement model has its own tests (tests/test_engagement.py).
        quick_options(
            models=("revenue", "hit"),
            report=True,
            mlflow=True,
            mlflow_dir=mlruns,
            experiment="tests",
        ),
        say=lambda _m: None,
    )
    return root, mlruns, trained


def test_writes_a_versioned_artifact_per_model_and_activates_it(
    run: tuple[Path, Path, list[TrainedModel]],
) -> None:
    root, _, trained = run
    assert [t.name for t in trained] == ["revenue", "hit"]
    for t in trained:
        assert artifacts.VERSION_RE.match(t.version)
        directory = root / t.name / t.version
        assert t.path == directory
        for name in (artifacts.MODEL_FILE, artifacts.CARD_FILE, artifacts.REPORT_FILE):
            assert (directory / name).is_file(), name
        assert artifacts.read_active(root, t.name) == t.version
        assert (root / t.name / artifacts.ACTIVE_FILE).read_text().strip() == t.version
        assert not [p for p in (root / t.name).iterdir() if p.name.startswith(".staging")]


def test_model_card_schema_and_contents(run: tuple[Path, Path, list[TrainedModel]]) -> None:
    _, _, trained = run
    expected = small_dataset()
    for t in trained:
        raw = json.loads((t.path / artifacts.CARD_FILE).read_text())
        for key in (
            "version",
            "created_at",
            "git_sha",
            "data",
            "features",
            "params",
            "metrics",
            "library_versions",
        ):
            assert key in raw, key
        card = ModelCard.model_validate(raw)
        assert card.name == t.name and card.version == t.version
        # revenue and hit: schema 2 (`PreReleaseFeatures`); engagement keeps schema 1.
        schema = FEATURE_SCHEMA_VERSION if t.name == "engagement" else PRERELEASE_SCHEMA
        assert card.feature_schema_version == schema
        assert card.data.films == expected.size
        assert card.data.sha256 == expected.content_hash()
        split = card.data.split
        assert split.strategy == "time" and "time-aware" in split.reason
        assert split.train + split.validation + split.test == card.data.rows
        assert split.train_until is not None and split.test_from is not None
        assert split.train_until <= split.test_from
        assert {f.type for f in card.features} <= {"numeric", "binary", "count"}
        assert {"log_budget", "director_prior_mean_log_revenue"} <= {f.name for f in card.features}
        assert not {"popularity", "vote_count", "vote_average", "revenue"} & {
            f.group for f in card.features
        }
        # Every family of the search (issue 14 added LightGBM and, for hit, ROI regressors);
        # the served model is one of them or the stacked average of two ("blend").
        searched = {c.family for c in card.candidates}
        assert searched == set(families(TASKS[t.name]))
        assert card.family in searched | {"blend"}
        assert {"scikit-learn", "numpy", "python", "mlflow"} <= set(card.library_versions)
        assert card.artifact.sha256 == artifacts.sha256_file(t.path / artifacts.MODEL_FILE)
        if t.name == "revenue":
            m = card.metrics
            assert {"rmsle", "mae_usd", "r2_log", "interval_coverage"} <= set(m)
            assert 0 < m["rmsle"] < 3 and m["mae_usd"] > 0
            assert card.interval is not None
            assert 0.5 < card.interval.coverage_test <= 1
            lo, hi = card.interval.offsets["budget_known"]
            assert lo < 0 < hi
        else:
            m = card.metrics
            assert {"roc_auc", "precision", "recall", "f1", "confusion_matrix"} <= set(m)
            assert 0.5 < m["roc_auc"] <= 1
            cm = m["confusion_matrix"]
            assert cm["tn"] + cm["fp"] + cm["fn"] + cm["tp"] == card.data.split.test
            assert card.threshold is not None and 0 < card.threshold < 1


def test_report_has_the_plots(run: tuple[Path, Path, list[TrainedModel]]) -> None:
    _, _, trained = run
    for t in trained:
        html = (t.path / artifacts.REPORT_FILE).read_text()
        assert html.count("data:image/png;base64,") >= 6
        for caption in ("Target distribution", "Feature importance", "Correlations"):
            assert caption in html
        assert ("Residuals" in html) if t.name == "revenue" else ("Confusion matrix" in html)


def test_mlflow_run_and_registered_model(run: tuple[Path, Path, list[TrainedModel]]) -> None:
    from mlflow.tracking import MlflowClient

    _, mlruns, trained = run
    for t in trained:
        info = t.card.mlflow
        assert info is not None and info.tracking_uri is not None
        assert info.tracking_uri.startswith("sqlite:///") and str(mlruns) in info.tracking_uri
        client = MlflowClient(tracking_uri=info.tracking_uri)
        mlrun = client.get_run(info.run_id)
        assert mlrun.data.tags["version"] == t.version
        metric = "test_rmsle" if t.name == "revenue" else "test_roc_auc"
        assert math.isclose(
            mlrun.data.metrics[metric], t.card.metrics[metric.removeprefix("test_")]
        )
        assert info.registered_model == f"tmdb-analytics-{t.name}"
        assert info.registered_version is not None
        registered = client.get_model_version(info.registered_model, info.registered_version)
        assert registered.run_id == info.run_id
        files = {f.path for f in client.list_artifacts(info.run_id)}
        assert {artifacts.REPORT_FILE, artifacts.CARD_FILE} <= files
        # The version training activated is MLflow's champion, with who and when.
        champion = client.get_model_version_by_alias(info.registered_model, "champion")
        assert str(champion.version) == info.registered_version
        assert champion.tags["champion_by"].startswith("training")


def test_registered_versions_carry_a_signature_and_an_input_example(
    run: tuple[Path, Path, list[TrainedModel]],
) -> None:
    """A pyfunc user of `models:/tmdb-analytics-<model>/<n>` sees what to send, and the
    example scores."""
    import mlflow
    import pandas as pd

    _, _, trained = run
    for t in trained:
        info = t.card.mlflow
        assert info is not None and info.tracking_uri is not None
        mlflow.set_tracking_uri(info.tracking_uri)
        uri = f"models:/{info.registered_model}/{info.registered_version}"
        model = mlflow.pyfunc.load_model(uri)
        inputs = model.metadata.get_input_schema()
        assert inputs is not None
        assert {"title", "budget", "release_date", "genres", "directors", "actors"} <= set(
            inputs.input_names()
        )
        assert not any(spec.required for spec in inputs.inputs)  # every fact is optional
        assert model.metadata.get_output_schema() is not None
        example = pd.DataFrame(model.input_example)
        assert len(example) >= 1 and example["title"].notna().all()
        assert "revenue" not in example.columns and "id" not in example.columns
        scores = np.asarray(model.predict(example), dtype=np.float64)
        assert np.all(np.isfinite(scores))
        # A client that knows only a few facts is served too.
        sparse = pd.DataFrame([{"title": "Only a few facts", "budget": 5e6, "genres": ["Drama"]}])
        assert np.all(np.isfinite(np.asarray(model.predict(sparse), dtype=np.float64)))


def test_each_version_has_a_reference_profile(
    run: tuple[Path, Path, list[TrainedModel]],
) -> None:
    from app.ml import drift

    root, _, trained = run
    for t in trained:
        assert t.card.profile is not None
        path = root / t.name / t.version / t.card.profile.file
        assert artifacts.sha256_file(path) == t.card.profile.sha256
        profile, note = drift.read_profile(path.parent, t.card.profile)
        assert profile is not None and note == ""
        assert profile["films"] == t.card.profile.films == t.card.data.rows  # refit on all
        assert set(profile["inputs"]) == {m.name for m in drift.MONITORED_INPUTS}
        budget = profile["inputs"]["budget"]
        assert len(budget["proportions"]) == len(budget["edges"]) + 1
        assert math.isclose(sum(budget["proportions"]), 1.0)
        assert 0 <= budget["missing_rate"] < 1
        genres = profile["inputs"]["genres"]
        assert "Drama" in genres["proportions"] and genres["counts"]["Drama"] > 0
        assert profile["output"]["kind"] == "numeric" and profile["output"]["missing_rate"] == 0


# --- data sources and the command line ----------------------------------------------------------


async def test_database_and_csv_give_the_same_training_data(
    db: AsyncDatabase[Document], settings: Settings, tmp_path: Path
) -> None:
    """`tmdb-analytics train` reads MONGODB_DB; the films it learns from are exactly those the
    CSV path produces (same cleaning, same hash)."""
    subset = tmp_path / "subset.csv"
    with require_shared(TMDB_TRAIN_CSV).open(newline="", encoding="utf-8") as src:
        rows = list(csv.reader(src))[:301]  # header + 300 films (cells span lines)
    with subset.open("w", newline="", encoding="utf-8") as dst:
        csv.writer(dst).writerows(rows)
    await import_tmdb_csv(db, subset)
    from_db = await load_from_db(settings)
    from_csv = load_from_csv(subset)
    assert from_db.size == from_csv.size == 300
    assert from_db.content_hash() == from_csv.content_hash()
    trained = train_models(
        from_db, settings.artifacts_dir, quick_options(models=("revenue",)), say=lambda _m: None
    )
    assert artifacts.read_active(settings.artifacts_dir, "revenue") == trained[0].version
    assert trained[0].card.data.source == f"mongodb:{settings.mongodb_db}"


def test_cli_train_from_csv(tmp_path: Path) -> None:
    from app.cli import app as cli

    csv_path = require_shared(TMDB_TRAIN_CSV)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--csv",
            str(csv_path),
            "--quick",
            "--no-mlflow",
            "--no-report",
            "--no-activate",
            "--model",
            "hit",
            "--artifacts-dir",
            str(tmp_path / "art"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("[") :])
    assert [s["model"] for s in summary] == ["hit"]
    assert summary[0]["active"] is False
    version = summary[0]["version"]
    assert artifacts.list_versions(tmp_path / "art", "hit") == [version]
    assert not (tmp_path / "art" / "hit" / artifacts.ACTIVE_FILE).exists()


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        train_models(small_dataset(), tmp_path, quick_options(models=("budget",)))


# --- the leakage guard ------------------------------------------------------------------------


def _film(
    title: str, released: str, revenue: float | None, director: str = "Dee Rector"
) -> dict[str, Any]:
    return film_record(
        {
            "title": title,
            "budget": 10_000_000,
            "revenue": revenue,
            "release_date": released,
            "genres": ["Drama"],
            "crew": [{"name": director, "job": "Director"}],
            "imdb": {"actors": ["Lead One", "Lead Two"]},
        }
    )


def _track(features: FilmFeatures, X: np.ndarray, kind: str) -> np.ndarray:
    names = features.feature_names_
    cols = [
        i
        for i, n in enumerate(names)
        if n.startswith(kind + "_prior") or n.startswith(kind + "_revenue")
    ]
    return X[:, cols]


def test_track_record_uses_only_earlier_films() -> None:
    films = [
        _film("First", "2000-01-01", 50_000_000),
        _film("Second", "2005-06-01", 400_000_000),
        _film("Same day as second", "2005-06-01", 1_000_000),
        _film("Third", "2010-03-01", 5_000_000_000),
    ]
    features = FilmFeatures().fit(films)
    X = features.transform(films)
    idx = {n: i for i, n in enumerate(features.feature_names_)}
    prior, mean = idx["director_prior_films"], idx["director_prior_mean_log_revenue"]
    # The first film has no history, whatever its director did later.
    assert X[0, prior] == 0 and math.isnan(X[0, mean])
    # The second sees the first only: not itself, not the film released the same day.
    assert X[1, prior] == 1 and X[1, mean] == pytest.approx(math.log1p(50_000_000))
    assert X[2, prior] == 1
    assert X[3, prior] == 3
    # Changing what later films earned changes nothing for earlier films...
    changed = [*films[:3], _film("Third", "2010-03-01", 1.0)]
    X2 = FilmFeatures().fit(changed).transform(changed)
    np.testing.assert_array_equal(X2[:3], X[:3])
    # ...and a film's own revenue is never an input.
    alone = FilmFeatures().fit(films).transform([{**films[1], "revenue": None}])
    np.testing.assert_array_equal(alone[0], X[1])


def test_track_record_on_real_films_matches_a_model_fitted_on_the_past_only() -> None:
    """For real films: the track-record features computed by a transformer that saw every
    film equal those of one that only ever saw films released before the film in question."""
    records = real_dataset().records
    full = FilmFeatures().fit(records)
    rng = np.random.default_rng(0)
    dated = [r for r in records if r["release_date"] and r["directors"] and r["actors"]]
    for film in (dated[i] for i in rng.choice(len(dated), 4, replace=False)):
        past = [
            r for r in records if r["release_date"] and r["release_date"] < film["release_date"]
        ]
        only_past = FilmFeatures().fit(past)
        for kind in TRACK_KINDS:
            np.testing.assert_allclose(
                _track(full, full.transform([film]), kind),
                _track(only_past, only_past.transform([film]), kind),
                equal_nan=True,
                err_msg=f"{film['title']} {kind}",
            )


def test_time_split_orders_train_validation_test() -> None:
    records = [r for r in real_dataset().records if r["revenue"] is not None]
    split = time_split(records)
    last_train = max(r["release_date"] for r in split.train if r["release_date"])
    val_dates = [r["release_date"] for r in split.validation]
    assert last_train <= min(val_dates)
    assert max(val_dates) <= min(r["release_date"] for r in split.test)
    assert split.info.train + split.info.validation + split.info.test == len(records)
    assert date.fromisoformat(split.info.test_from or "") >= date(2010, 1, 1)


def test_conformal_interval_covers_its_nominal_share() -> None:
    rng = np.random.default_rng(1)
    calibration, fresh = rng.normal(0, 1, 4000), rng.normal(0, 1, 4000)
    known = np.ones(4000, dtype=bool)
    offsets = evaluate.fit_interval(calibration, known, (0.1, 0.9))
    coverage = evaluate.interval_coverage(fresh, np.zeros(4000), known, offsets)
    assert 0.77 <= coverage <= 0.83


def _drifting_outcomes(shifts: list[float], per_fold: int = 400) -> tuple[Any, Any, Any]:
    """Out-of-fold scores of folds 0..n-1 whose outcomes follow sigmoid(score + shift)."""
    rng = np.random.default_rng(3)
    score = rng.normal(0, 1.5, per_fold * len(shifts))
    fold = np.repeat(np.arange(len(shifts)), per_fold)
    p = 1 / (1 + np.exp(-(score + np.asarray(shifts)[fold])))
    return (rng.random(len(p)) < p).astype(float), score, fold


def test_calibration_follows_a_drifting_hit_rate_from_the_latest_fold() -> None:
    y, score, fold = _drifting_outcomes([-1.5, -1.5, 1.0, 1.0])
    calibration, report = choose_calibration(y, score, fold, allow_identity=True)
    assert report["window"] == "recent" and report["fitted_on"] == 400
    assert set(report["validation_brier"]) >= {"platt", "platt_recent", "identity"}
    # Fitted on the last fold: its rate, not the mean of all folds.
    last = fold == 3
    assert calibration(score[last]).mean() == pytest.approx(y[last].mean(), abs=0.03)


def test_calibration_uses_every_fold_when_the_rate_holds() -> None:
    y, score, fold = _drifting_outcomes([0.0, 0.0, 0.0, 0.0], per_fold=150)
    _, report = choose_calibration(y, score * 2, fold, allow_identity=False)
    # Twice the log-odds: a map is needed, and the larger window fits it better.
    assert report["chosen"] in {"platt", "isotonic"} and report["window"] == "all"


def test_recency_weights_halve_per_half_life_and_average_one() -> None:
    films: list[dict[str, Any]] = [
        {"release_date": "2016-01-01"},
        {"release_date": "2006-01-01"},
        {"release_date": "1996-01-02"},
        {"release_date": None},
    ]
    assert recency_weights(films, None) is None
    w = recency_weights(films, 10.0)
    assert w is not None
    assert w[0] / w[1] == pytest.approx(2.0, rel=1e-3)
    assert w[1] / w[2] == pytest.approx(2.0, rel=1e-3)
    assert w[3] == pytest.approx(np.mean(w[:3]))  # undated: the mean weight
    assert w.mean() == pytest.approx(1.0)


def test_weights_reach_the_model_inside_the_wrappers() -> None:
    """`fit_weighted` routes weights through a Pipeline and the estimator wrappers: zero
    weight on half of the films is the same as leaving them out."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 3))
    X[:, -1] = rng.normal(size=400)  # the price-level column of ConstantDollarRegressor
    y = X[:, 0] * 2 + rng.normal(scale=0.1, size=400)
    y[200:] += 5.0  # the films that will weigh nothing
    w = np.r_[np.ones(200), np.zeros(200)]
    tail = ConstantDollarRegressor(AveragedRegressor([Ridge(alpha=1.0), Ridge(alpha=2.0)]))
    weighted = fit_weighted(Pipeline([("model", tail)]), X, y, w)
    alone = Pipeline([("model", clone(tail))]).fit(X[:200], y[:200])
    np.testing.assert_allclose(weighted.predict(X), alone.predict(X), atol=1e-8)
