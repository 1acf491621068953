"""Model monitoring against the real local database and quick-trained models: the prediction
log, drift that is (and is not) there, live accuracy joined to outcomes exactly once, the
retraining advice of `monitor check`, the monitoring page, and who may call what.

(The log through a database outage and a restart: tests/test_monitoring_outage.py; MLflow
following activations: tests/test_monitoring_mlflow.py.)"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.ml import drift
from app.ml.targets import is_hit
from app.security import Role
from app.services import credentials, outcomes, prediction_log
from app.services.csv_io import import_tmdb_csv
from app.services.prediction_log import PredictionLogWriter, entries
from tests.ml_support import (
    app_settings,
    copy_artifacts,
    run_cli,
    serve,
    small_dataset,
    trained_artifacts,
)
from tests.support import PROBLEM, TMDB_TRAIN_CSV, assert_problem, require_shared

LOG_TIMEOUT_S = 60.0


def film_body(rec: dict[str, Any], film_id: int | None = None) -> dict[str, Any]:
    """A training record (canonical form) as a client sends the film: TMDB field names, the
    people as credits, the flags as the facts they stand for."""
    body: dict[str, Any] = {
        "title": rec["title"],
        "budget": rec["budget"],
        "runtime": rec["runtime"],
        "release_date": rec["release_date"],
        "genres": rec["genres"],
        "original_language": rec["original_language"],
        "production_companies": rec["production_companies"],
        "production_countries": rec["production_countries"],
        "spoken_languages": rec["spoken_languages"],
        "keywords": rec["keywords"],
        "homepage": "https://example.org" if rec["homepage"] else None,
        "tagline": "A tagline." if rec["tagline"] else None,
        "belongs_to_collection": "A collection" if rec["belongs_to_collection"] else None,
        "cast": rec["actors"],
        "crew": [{"name": d, "job": "Director"} for d in rec["directors"]],
    }
    if film_id is not None:
        body["id"] = film_id
    return body


def training_films(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` films the served revenue model was fitted on (those with a known revenue)."""
    fitted = [r for r in small_dataset().records if r.get("revenue") is not None]
    return random.Random(seed).sample(fitted, n)


async def wait_logged(db: AsyncDatabase[Document], model: str, n: int) -> None:
    """Until the log writer has written `n` predictions of `model`."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while (found := await prediction_log.count(db, model)) < n:
        assert time.monotonic() < deadline, f"{found} of {n} predictions logged"
        await asyncio.sleep(0.1)


async def predict_all(
    http: httpx.AsyncClient, model: str, films: Sequence[dict[str, Any]], batch: int = 100
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(films), batch):
        response = await http.post(
            f"/v1/predict/{model}", json={"items": list(films[start : start + batch])}
        )
        assert response.status_code == 200, response.text
        out.extend(response.json()["predictions"])
    return out


def by_feature(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in report["features"]}


@pytest.fixture
def mongo(client: AsyncMongoClient[Document]) -> AsyncMongoClient[Document]:
    return client


# --- the arithmetic, without the service ------------------------------------------------------


def test_same_population_is_ok_shifted_one_drifts() -> None:
    """The statistics alone: a sample of the reference population is ok on every input; a
    tenfold budget is drift on the budget only."""
    rng = np.random.default_rng(3)
    rows: list[dict[str, Any]] = [
        {"budget": float(b), "genres": [str(g)]}
        for b, g in zip(
            rng.lognormal(16, 1.5, 3000), rng.choice(["A", "B", "C"], 3000), strict=True
        )
    ]
    profile = {
        "inputs": {
            "budget": drift.numeric_profile(drift.numeric_values(rows, "budget"), rng),
            "genres": drift.category_profile(drift.category_values(rows, "genres")),
        }
    }
    limits = drift.Thresholds()
    same = [dict(r) for r in random.Random(1).sample(rows, 500)]
    results = {e["feature"]: e for e in drift.compare(profile, same, np.zeros(0), limits)}
    assert {e["status"] for e in results.values()} == {"ok"}, results
    shifted = [{**r, "budget": r["budget"] * 10} for r in same]
    results = {e["feature"]: e for e in drift.compare(profile, shifted, np.zeros(0), limits)}
    assert results["budget"]["status"] == "drift" and results["budget"]["p_value"] < 1e-6
    assert results["genres"]["status"] == "ok"
    # Fewer predictions than the minimum are never judged.
    few = drift.compare(profile, shifted[:50], np.zeros(0), limits)
    assert {e["status"] for e in few} == {"ok"}


# --- drift through the service ----------------------------------------------------------------


async def test_drift_absent_on_training_films_and_present_when_shifted(
    mongodb_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
    mongo: AsyncMongoClient[Document],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, _ = trained_artifacts(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("drift")
    settings = app_settings(mongodb_uri, root, workdir)
    db = mongo[settings.mongodb_db]
    plain = [film_body(r) for r in training_films(400, seed=7)]
    # The same kind of films, but budgets twenty times larger and every film a documentary.
    shifted = [
        {
            **film_body(r),
            "budget": r["budget"] * 20 if r["budget"] else None,
            "genres": ["Documentary"],
        }
        for r in training_films(300, seed=8)
    ]
    async with serve(settings) as http:
        empty = await http.get("/v1/models/revenue/drift")
        assert empty.status_code == 200, empty.text
        assert empty.json()["n"] == 0 and empty.json()["status"] == "ok"

        await predict_all(http, "revenue", plain)
        await wait_logged(db, "revenue", len(plain))
        between = datetime.now(UTC)
        await asyncio.sleep(0.01)
        await predict_all(http, "revenue", shifted)
        await wait_logged(db, "revenue", len(plain) + len(shifted))

        before = (
            await http.get("/v1/models/revenue/drift", params={"until": between.isoformat()})
        ).json()
        assert before["n"] == len(plain)
        assert before["status"] == "ok", [f for f in before["features"] if f["status"] != "ok"]
        features = by_feature(before)
        assert {"budget", "runtime", "genres", "original_language", "output"} <= set(features)
        assert "release_year" not in features  # always "drifts": films come after training
        assert all(f["psi"] is not None and f["psi"] < 0.1 for f in features.values())

        after = (
            await http.get("/v1/models/revenue/drift", params={"since": between.isoformat()})
        ).json()
        assert after["n"] == len(shifted) and after["status"] == "drift"
        features = by_feature(after)
        assert features["budget"]["status"] == "drift" and features["budget"]["p_value"] < 1e-6
        assert features["genres"]["status"] == "drift" and features["genres"]["p_value"] < 1e-6
        assert features["runtime"]["status"] == "ok"
        assert features["original_language"]["status"] == "ok"

        # The default window (both batches) refreshes the list's status and the gauges.
        whole = (await http.get("/v1/models/revenue/drift")).json()
        assert whole["n"] == len(plain) + len(shifted) and whole["status"] == "drift"
        listing = {m["name"]: m for m in (await http.get("/v1/models")).json()["models"]}
        assert listing["revenue"]["drift"]["status"] == "drift"
        assert "budget" in listing["revenue"]["drift"]["drifting"]
        version = whole["version"]
        metrics = (await http.get("/metrics")).text
        assert (
            f'model_drift_status{{feature="budget",model="revenue",version="{version}"}} 2.0'
            in metrics
        )
        assert f'model_drift_predictions{{model="revenue",version="{version}"}} 700.0' in metrics

        page = await http.get("/v1/models/revenue/monitoring")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<script" not in page.text and "src=" not in page.text  # self-contained
        assert "Retraining advised" in page.text and "budget" in page.text

        # Bad windows are the caller's mistake, never a 500.
        assert_problem(
            await http.get(
                "/v1/models/revenue/drift",
                params={
                    "since": between.isoformat(),
                    "until": (between - timedelta(1)).isoformat(),
                },
            ),
            400,
        )
        assert_problem(await http.get("/v1/models/nope/drift"), 404)
        assert_problem(await http.get("/v1/models/revenue/drift", params={"since": "soon"}), 422)

        # A scheduler's `monitor check` sees the same drift and says why.
        result = await run_cli(monkeypatch, settings, ["monitor", "check", "--model", "revenue"])
        assert result.exit_code == 1, result.output
        assert "RETRAIN revenue" in result.output and "budget" in result.output


# --- live accuracy ----------------------------------------------------------------------------

LISTS = ("genres", "keywords", "production_companies", "production_countries", "spoken_languages")


def released_films(n: int) -> tuple[list[str], list[dict[str, str]]]:
    """The header and `n` rows of the train CSV whose budget and revenue are known in dollars
    (no "millions" quirk), films the quick models were not fitted on."""
    with require_shared(TMDB_TRAIN_CSV).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [
            r
            for r in reader
            if float(r["budget"] or 0) >= 1000 and float(r["revenue"] or 0) >= 1000
        ]
        header = list(reader.fieldnames or [])
    return header, rows[-n:]  # the end of the file: beyond the 1,200 the models learnt from


def as_prediction_request(row: dict[str, str]) -> dict[str, Any]:
    film: dict[str, Any] = {k: json.loads(row[k]) for k in LISTS}
    film.update(
        id=int(row["id"]),
        title=row["title"],
        budget=float(row["budget"]),
        runtime=float(row["runtime"]) if row["runtime"] else None,
        release_date=row["release_date"] or None,
        original_language=row["original_language"],
    )
    return film


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


async def test_outcomes_join_once_even_when_imported_twice(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory, mongo: AsyncMongoClient[Document]
) -> None:
    root, _ = trained_artifacts(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("outcomes")
    settings = app_settings(mongodb_uri, root, workdir)
    db = mongo[settings.mongodb_db]
    header, rows = released_films(40)
    films = [as_prediction_request(r) for r in rows]
    truth = {int(r["id"]): float(r["revenue"]) for r in rows}
    budgets = {int(r["id"]): float(r["budget"]) for r in rows}
    async with serve(settings) as http:
        revenue = await predict_all(http, "revenue", films, batch=15)
        hit = await predict_all(http, "hit", films, batch=15)
        audience = await predict_all(http, "engagement", films, batch=15)
        # The first film predicted twice more: it still counts once.
        await predict_all(http, "revenue", [films[0], films[0]])
        await predict_all(http, "hit", [films[0]])
        # And a film without an id, which nothing can join.
        await predict_all(http, "revenue", [{**films[1], "id": None}])
        await wait_logged(db, "revenue", len(films) + 3)
        await wait_logged(db, "hit", len(films) + 1)
        await wait_logged(db, "engagement", len(films))

        nothing = (await http.get("/v1/models/revenue/performance")).json()
        assert (
            nothing["n"] == 0
            and nothing["by_version"] == []
            and nothing["metrics"]["rmsle"] is None
        )

        subset = write_csv(workdir / "released.csv", header, rows)
        for _ in range(2):  # the same figures imported twice
            report = await import_tmdb_csv(db, subset)
            assert not report.errors
        known = await outcomes.read(db)
        assert {i: figures["revenue"] for i, figures in known.items()} == truth
        votes = {int(r["id"]): float(r["vote_count"]) for r in rows}
        ratings = {int(r["id"]): float(r["vote_average"]) for r in rows}
        assert {i: figures["vote_count"] for i, figures in known.items()} == votes

        perf = (await http.get("/v1/models/revenue/performance")).json()
        assert perf["model"] == "revenue" and perf["n"] == len(films)
        [version] = perf["by_version"]
        assert version["n"] == len(films) and version["test_metrics"]["rmsle"] > 0
        assert [m["month"] for m in perf["by_month"]] == [datetime.now(UTC).strftime("%Y-%m")]
        y = np.asarray([truth[f["id"]] for f in films])
        p = np.asarray([r["revenue"] for r in revenue])
        expected_rmsle = math.sqrt(float(np.mean((np.log1p(y) - np.log1p(p)) ** 2)))
        assert perf["metrics"]["rmsle"] == pytest.approx(expected_rmsle, rel=1e-6)
        inside = [
            r["interval"]["low"] <= t <= r["interval"]["high"]
            for r, t in zip(revenue, y, strict=True)
        ]
        assert perf["metrics"]["interval_coverage"] == pytest.approx(sum(inside) / len(inside))

        hits = (await http.get("/v1/models/hit/performance")).json()
        assert hits["n"] == len(films)
        actual = [is_hit(truth[f["id"]], budgets[f["id"]]) for f in films]
        called = [h["hit"] for h in hit]
        cm = hits["metrics"]["confusion_matrix"]
        assert cm["tp"] == sum(a and c for a, c in zip(actual, called, strict=True))
        assert cm["fn"] == sum(a and not c for a, c in zip(actual, called, strict=True))
        assert sum(cm.values()) == len(films)
        assert hits["metrics"]["roc_auc"] is None or 0 <= hits["metrics"]["roc_auc"] <= 1

        # Engagement: the released films' votes and ratings are its outcomes.
        audience_perf = (await http.get("/v1/models/engagement/performance")).json()
        assert audience_perf["n"] == len(films)
        y_votes = np.asarray([votes[f["id"]] for f in films])
        p_votes = np.asarray([a["vote_count"] for a in audience])
        expected_votes = math.sqrt(float(np.mean((np.log1p(y_votes) - np.log1p(p_votes)) ** 2)))
        live = audience_perf["metrics"]
        assert live["vote_count_rmsle"] == pytest.approx(expected_votes, rel=1e-6)
        rated = [(f, a) for f, a in zip(films, audience, strict=True) if votes[f["id"]] >= 10]
        assert live["n_rated"] == len(rated) > 0
        expected_rating = math.sqrt(
            float(np.mean([(a["vote_average"] - ratings[f["id"]]) ** 2 for f, a in rated]))
        )
        assert live["vote_average_rmse"] == pytest.approx(expected_rating, rel=1e-6)
        [audience_version] = audience_perf["by_version"]
        assert audience_version["test_metrics"]["vote_count_rmsle"] > 0
        audience_drift = (await http.get("/v1/models/engagement/drift")).json()
        assert audience_drift["n"] == len(films) and audience_drift["features"]
        page = await http.get("/v1/models/engagement/monitoring")
        assert page.status_code == 200 and "vote_count_rmsle" in page.text

        # A partner's figure replaces the imported one; an unpredicted film joins nothing.
        first = films[0]["id"]
        posted = await http.post(
            "/v1/predictions/outcomes",
            json={
                "items": [
                    {"id": first, "revenue": 123_456_789.0},
                    {"id": 999_999_999, "revenue": 5e6},
                ]
            },
        )
        assert posted.status_code == 200, posted.text
        assert posted.json() == {"recorded": 2, "new": 1, "predicted": 1}
        again = (await http.get("/v1/models/revenue/performance")).json()
        assert again["n"] == len(films) and again["metrics"]["rmsle"] != perf["metrics"]["rmsle"]
        # Votes alone change engagement's figures and keep the film's revenue.
        voted = await http.post(
            "/v1/predictions/outcomes", json={"items": [{"id": first, "vote_count": 1}]}
        )
        assert voted.json() == {"recorded": 1, "new": 0, "predicted": 1}
        assert (await outcomes.read(db, [first]))[first]["revenue"] == 123_456_789.0
        audience_again = (await http.get("/v1/models/engagement/performance")).json()
        assert audience_again["metrics"]["vote_count_rmsle"] != live["vote_count_rmsle"]
        # Re-importing the same catalogue (every `make run` does) tells nothing new: the
        # partner's figures stay. A catalogue that changed the film does replace them.
        assert not (await import_tmdb_csv(db, subset)).errors
        assert (await outcomes.read(db, [first]))[first] == {
            "revenue": 123_456_789.0,
            "vote_count": 1.0,
            "vote_average": ratings[first],
        }
        recrawled = [{**r, "revenue": "222000000"} if int(r["id"]) == first else r for r in rows]
        newer = write_csv(workdir / "recrawled.csv", header, recrawled)
        assert (await import_tmdb_csv(db, newer)).summary.updated == 1
        assert (await outcomes.read(db, [first]))[first]["revenue"] == 222_000_000.0

        window = (
            await http.get(
                "/v1/models/revenue/performance",
                params={
                    "since": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                    "until": (datetime.now(UTC) + timedelta(hours=2)).isoformat(),
                },
            )
        ).json()
        assert window["n"] == 0

        assert_problem(await http.post("/v1/predictions/outcomes", json={"items": []}), 422)
        bad = await http.post(
            "/v1/predictions/outcomes", json={"items": [{"id": 1, "revenue": -3}]}
        )
        assert_problem(bad, 422)
        assert_problem(
            await http.post("/v1/predictions/outcomes", json={"items": [{"id": 1}]}), 422
        )


async def test_log_writer_drops_and_counts_when_full_and_prunes_by_age(
    db: AsyncDatabase[Document],
) -> None:
    context = prediction_log.LogContext("req-1", "key:abc")

    def docs(ids: list[int], version: str = "v1") -> list[Document]:
        return entries(
            "revenue", version, context, ids, [{}] * len(ids), [{"score": 1.0}] * len(ids)
        )

    # A writer that cannot write (never started): the buffer keeps 5, drops 2, never waits;
    # what is still buffered when it stops is counted as dropped too.
    full = PredictionLogWriter(db, capacity=5)
    assert full.submit(docs([1, 2, 3, 4, 5, 6, 7])) == 5
    assert full.stats("revenue")["dropped"] == 2 and full.stats("revenue")["buffered"] == 5
    await full.close(timeout=1)
    assert full.stats("revenue")["dropped"] == 7 and full.stats("revenue")["written"] == 0

    # Retention: a prediction older than PREDICTION_LOG_DAYS goes at the next pruning.
    writer = PredictionLogWriter(db, retention_days=30, flush_seconds=60, prune_every=0.0)
    old = docs([8], "v0")
    old[0]["at"] = datetime.now(UTC) - timedelta(days=45)
    unencodable = docs([2**70])  # BSON holds 8-byte integers: dropped, not a stuck writer
    writer.submit([*docs([1, 2]), *unencodable, *docs([3]), *old])
    await writer.start()
    assert await writer.flush(timeout=30)
    deadline = time.monotonic() + 30
    while await prediction_log.count(db, "revenue") != 3:  # written, and the old one pruned
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    await writer.close()
    assert writer.stats("revenue")["written"] == 4 and writer.stats("revenue")["dropped"] == 1
    assert await prediction_log.predicted_among(db, [1, 2, 3, 4, 8]) == {1, 2, 3}
    (logged,) = [f for f in await prediction_log.logged_films(db, "revenue") if f["id"] == 1]
    assert logged["request_id"] == "req-1" and logged["principal"] == "key:abc"
    assert logged["model"] == "revenue" and logged["version"] == "v1"


def test_a_catalogue_record_tells_an_outcome_only_once_it_is_one() -> None:
    """Revenue when positive; votes and rating once the film is out and voted on (TMDB shows
    zeros, and early votes, for films not released yet)."""
    today = datetime(2026, 6, 1, tzinfo=UTC).date()
    released = {"release_date": "2026-05-01", "revenue": 5e6, "vote_count": 40, "vote_average": 6.5}
    assert outcomes.catalogue_figures(released, today) == {
        "revenue": 5e6,
        "vote_count": 40.0,
        "vote_average": 6.5,
    }
    coming = {**released, "release_date": "2026-07-01", "revenue": 0}
    assert outcomes.catalogue_figures(coming, today) == {}
    unvoted = {**released, "vote_count": 0}
    assert outcomes.catalogue_figures(unvoted, today) == {"revenue": 5e6}
    undated = {**released, "release_date": None}
    assert outcomes.catalogue_figures(undated, today) == {"revenue": 5e6}


def test_input_reader_reads_each_cell_as_the_monitored_input_says() -> None:
    """The reader works column by column; each film's dict is what reading its cells one by
    one gives: NaN as None, budget back in dollars (rounded to cents), categories as ints,
    record fields as given, in the monitored inputs' order."""
    names = ["runtime", "has_homepage", "log_budget", "extra", "n_genres"]
    reader = drift.InputReader(names)
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 20, size=(50, len(names)))
    X[:, 1] = rng.integers(0, 2, 50)
    X[rng.random(X.shape) < 0.2] = np.nan
    records = [
        {"genres": ["Drama"] * (i % 3), "original_language": None if i % 4 else "fr"}
        for i in range(50)
    ]
    expected = []
    for row, rec in zip(X.tolist(), records, strict=True):
        cells = dict(zip(names, row, strict=True))
        film: dict[str, Any] = {}
        for m in drift.MONITORED_INPUTS:
            if m.feature is not None and m.feature in cells:
                value = cells[m.feature]
                if math.isnan(value):
                    film[m.name] = None
                elif m.name == "budget":
                    film[m.name] = round(math.expm1(value), 2)
                else:
                    film[m.name] = int(value) if m.kind == "category" else value
        for m in drift.MONITORED_INPUTS:
            if m.record_field is not None:
                film[m.name] = rec.get(m.record_field)
        expected.append(film)
    got = reader.rows(X, records)
    assert got == expected
    assert [list(g) for g in got] == [list(e) for e in expected]  # same key order
    assert all(type(g["has_homepage"]) is int for g in got if g["has_homepage"] is not None)
    assert drift.InputReader(["unmonitored"]).rows(X[:2, :1], records[:2]) == [
        {"genres": records[0]["genres"], "original_language": "fr"},
        {"genres": records[1]["genres"], "original_language": None},
    ]


async def test_pending_predictions_become_the_documents_each_request_would_have_made(
    db: AsyncDatabase[Document],
) -> None:
    """The writer reads the inputs of many requests (and model versions) in one pass: the
    predictions it stores are those each request would have made alone; what does not fit
    is counted."""
    readers = [drift.InputReader(["log_budget", "runtime"]), drift.InputReader(["runtime"])]
    rng = np.random.default_rng(3)
    pending = [
        prediction_log.PendingPredictions(
            model="revenue",
            version=f"v{k % 2}",
            context=prediction_log.LogContext(f"req-{k}", "key:abc"),
            at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=k),
            ids=[100 * k + i for i in range(k + 1)],
            reader=readers[k % 2],
            X=rng.uniform(1, 20, size=(k + 1, 2 - k % 2)),
            records=[{"genres": ["Drama"], "original_language": "en"}] * (k + 1),
            outputs={"score": [float(k)] * (k + 1)},
        )
        for k in range(4)
    ]
    alone = [
        doc
        for p in pending
        for doc in entries(
            p.model,
            p.version,
            p.context,
            p.ids,
            p.reader.rows(p.X, p.records),
            [{"score": score} for score in p.outputs["score"]],
            at=p.at,
        )
    ]
    roomy = PredictionLogWriter(db, capacity=100, flush_seconds=60)
    for p in pending:
        roomy.submit_pending(p)
    await roomy.start()
    assert await roomy.flush(timeout=30)
    await roomy.close()
    stored = [
        film
        async for doc in db[prediction_log.PREDICTION_LOG].find({})
        for film in prediction_log.unpack(doc)
    ]
    await db[prediction_log.PREDICTION_LOG].delete_many({})

    def strip(docs: list[Document]) -> list[Document]:
        return sorted(
            ({k: v for k, v in d.items() if k != "_id"} for d in docs), key=lambda d: d["id"]
        )

    assert strip(stored) == strip(alone) and len(stored) == 1 + 2 + 3 + 4

    writer = PredictionLogWriter(db, capacity=7, flush_seconds=60)
    assert [writer.submit_pending(p) for p in pending] == [1, 2, 3, 1]
    assert writer.stats("revenue")["dropped"] == 3 and writer.stats("revenue")["buffered"] == 7
    await writer.start()
    assert await writer.flush(timeout=30)
    await writer.close()
    assert writer.stats("revenue")["written"] == 7
    assert await prediction_log.count(db, "revenue") == 7


async def test_steady_traffic_is_written_in_batches_not_one_insert_per_prediction(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prediction every 10 ms for a second: the writer waits out its flush interval between
    writes. It used to write whatever had arrived as soon as the last write returned, which
    under steady traffic meant an insert per prediction."""
    batches: list[int] = []
    insert = prediction_log._insert

    async def counted(database: AsyncDatabase[Document], batch: list[prediction_log.Slab]) -> None:
        batches.append(sum(map(len, batch)))
        await insert(database, batch)

    monkeypatch.setattr(prediction_log, "_insert", counted)
    reader = drift.InputReader(["runtime"])
    writer = PredictionLogWriter(db, flush_seconds=0.3)
    await writer.start()
    for k in range(100):
        writer.submit_pending(
            prediction_log.PendingPredictions(
                "revenue",
                "v1",
                prediction_log.LogContext(f"req-{k}", None),
                datetime.now(UTC),
                [k],
                reader,
                np.asarray([[100.0 + k]]),
                [{}],
                {"score": [1.0]},
            )
        )
        await asyncio.sleep(0.01)
    assert await writer.flush(timeout=30)
    await writer.close()
    assert sum(batches) == 100 and await prediction_log.count(db, "revenue") == 100
    assert len(batches) <= 8, batches


async def test_predicted_ids_are_inserted_once_and_their_last_time_moves_forward(
    db: AsyncDatabase[Document],
) -> None:
    """New ids are inserted in one batch; ids already marked (by another process, or before a
    restart) keep their first time and take the later last time, never an earlier one."""
    day = datetime(2026, 5, 1, tzinfo=UTC)
    await prediction_log.mark_predicted(db, {1: day, 2: day})
    later, earlier = day + timedelta(days=3), day - timedelta(days=3)
    await prediction_log.mark_predicted(db, {2: later, 3: later})
    await prediction_log.mark_predicted(db, {1: earlier})
    markers = {
        doc["id"]: doc async for doc in db[prediction_log.PREDICTED_FILMS].find({}, {"_id": 0})
    }
    assert {i: (m["first_at"], m["last_at"]) for i, m in markers.items()} == {
        1: (day, day),
        2: (day, later),
        3: (later, later),
    }
    assert await prediction_log.predicted_among(db, [1, 2, 3, 4]) == {1, 2, 3}


async def test_sample_and_logged_record(
    mongodb_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
    mongo: AsyncMongoClient[Document],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A logged prediction holds who asked, the inputs as the model saw them and the output,
    and `monitor log` prints it; PREDICTION_LOG_SAMPLE=0 logs nothing."""
    root, _ = trained_artifacts(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("sample")
    settings = app_settings(mongodb_uri, root, workdir)
    db = mongo[settings.mongodb_db]
    film = film_body(training_films(1, seed=3)[0], film_id=42)
    async with serve(settings) as http:
        answer = await http.post("/v1/predict/revenue", json={"items": [film]})
        assert answer.status_code == 200
        await wait_logged(db, "revenue", 1)
        (doc,) = await prediction_log.logged_films(db, "revenue")
        assert doc["id"] == 42 and doc["request_id"] == answer.headers["x-request-id"]
        assert doc["principal"] == "admin_key:admin-key"
        assert doc["version"] == answer.json()["model_version"]
        assert doc["output"]["revenue"] == answer.json()["predictions"][0]["revenue"]
        assert doc["inputs"]["budget"] == pytest.approx(film["budget"], rel=1e-6)
        assert sorted(doc["inputs"]["genres"]) == sorted(film["genres"])
        # The writer counts a batch once all of it is done (the predicted-ids markers too),
        # a moment after its chunk is in the log.
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while (await http.get("/v1/models/revenue")).json()["prediction_log"]["written"] < 1:
            assert time.monotonic() < deadline, "the writer never counted the written batch"
            await asyncio.sleep(0.05)
        await http.post("/v1/predict/revenue", json={"items": [film_body(training_films(1, 4)[0])]})
        await wait_logged(db, "revenue", 2)
        printed = await run_cli(monkeypatch, settings, ["monitor", "log", "revenue", "--id", "42"])
        assert printed.exit_code == 0, printed.output
        (line,) = printed.output.splitlines()
        assert json.loads(line) == {**doc, "at": doc["at"].isoformat()}
        both = await run_cli(monkeypatch, settings, ["monitor", "log", "revenue", "--since", "1h"])
        assert [json.loads(x)["id"] for x in both.output.splitlines()] == [None, 42]  # newest first
        early = await run_cli(monkeypatch, settings, ["monitor", "log", "revenue", "--until", "1h"])
        assert early.exit_code == 0 and early.output == ""
        bad = await run_cli(monkeypatch, settings, ["monitor", "log", "revenue", "--since", "soon"])
        assert bad.exit_code == 2 and "--since" in bad.output
        unknown = await run_cli(monkeypatch, settings, ["monitor", "log", "nomodel"])
        assert unknown.exit_code == 2 and "MODEL" in unknown.output

    off = app_settings(mongodb_uri, root, workdir).model_copy(update={"prediction_log_sample": 0.0})
    db_off = mongo[off.mongodb_db]
    async with serve(off) as http:
        assert (
            await http.post("/v1/predict/revenue", json={"items": [film] * 5})
        ).status_code == 200
        await asyncio.sleep(1.0)
        assert await prediction_log.count(db_off) == 0


async def test_a_version_without_profile_serves_and_reports_ok_with_a_note(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory, mongo: AsyncMongoClient[Document]
) -> None:
    root = copy_artifacts(tmp_path_factory)
    version = sorted(p.name for p in (root / "revenue").iterdir() if p.is_dir())[-1]
    card_path = root / "revenue" / version / "model_card.json"
    card = json.loads(card_path.read_text())
    card.pop("profile")  # as versions trained before profiles existed
    card_path.write_text(json.dumps(card))
    (root / "revenue" / version / drift.PROFILE_FILE).unlink()
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("no-profile"))
    async with serve(settings) as http:
        await predict_all(http, "revenue", [film_body(r) for r in training_films(5, seed=1)])
        await wait_logged(mongo[settings.mongodb_db], "revenue", 5)
        report = (await http.get("/v1/models/revenue/drift")).json()
        assert report["version"] == version
        assert report["status"] == "ok" and report["n"] == 5 and report["features"] == []
        assert "retrain" in report["note"]


async def test_who_may_call_the_monitoring_endpoints(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory, mongo: AsyncMongoClient[Document]
) -> None:
    root, _ = trained_artifacts(tmp_path_factory)
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("auth"))
    db = mongo[settings.mongodb_db]
    keys = {role: (await credentials.create_api_key(db, role.value, role))[1] for role in Role}
    outcome = {"items": [{"id": 5, "revenue": 1e6}]}
    reads = ("/v1/models/revenue/drift", "/v1/models/hit/performance", "/v1/models/hit/monitoring")
    async with serve(settings) as http:
        for path in reads:
            assert_problem(await http.get(path, headers={"X-API-Key": ""}), 401)
            anonymous = await http.get(path, headers={"X-API-Key": "tmdb_nope"})
            assert anonymous.status_code == 401
            for role in Role:
                answer = await http.get(path, headers={"X-API-Key": keys[role]})
                assert answer.status_code == 200, (path, role, answer.text)
        assert_problem(
            await http.post("/v1/predictions/outcomes", json=outcome, headers={"X-API-Key": ""}),
            401,
        )
        viewer = await http.post(
            "/v1/predictions/outcomes", json=outcome, headers={"X-API-Key": keys[Role.viewer]}
        )
        assert viewer.status_code == 403 and viewer.headers["content-type"].startswith(PROBLEM)
        for role in (Role.predictor, Role.admin):
            answer = await http.post(
                "/v1/predictions/outcomes", json=outcome, headers={"X-API-Key": keys[role]}
            )
            assert answer.status_code == 200, (role, answer.text)


async def test_monitor_check_skips_a_model_never_trained_unless_it_is_named(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install that trained revenue and hit before engagement existed: the scheduler's
    plain `monitor check` judges what serves and is not failed by the model it never had;
    naming that model is still an error."""
    root = copy_artifacts(tmp_path_factory)
    shutil.rmtree(root / "engagement")
    settings = app_settings(mongodb_uri, root, tmp_path_factory.mktemp("never-trained"))
    plain = await run_cli(monkeypatch, settings, ["monitor", "check"])
    assert plain.exit_code == 0, plain.output
    assert "skipped engagement: no version serves" in plain.output
    assert "ok: no retraining advised" in plain.output
    named = await run_cli(monkeypatch, settings, ["monitor", "check", "--model", "engagement"])
    assert named.exit_code == 2, named.output
    assert "cannot judge engagement: no version serves" in named.output
