"""MLflow follows what serves, in a real MLflow tracking store (SQLite in a temporary folder):
activation, rollback and reload move the registered model's `champion` alias and say who did
it; `monitor report` adds live metrics to the serving version's run; an unreachable MLflow
changes nothing for serving, and both the API and the command say so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.db import Document
from app.localdb import free_port
from app.ml import artifacts, mlflow_link
from app.services import prediction_log
from tests.ml_support import FILM, app_settings, quick_options, run_cli, serve, small_dataset
from training.train import train_models
from training.types import TrainedModel


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[TrainedModel]]]:
    """Two quick revenue versions tracked and registered in a store of this module's own."""
    work = tmp_path_factory.mktemp("mlflow-monitoring")
    root, mlruns = work / "artifacts", work / "mlruns"
    trained = [
        train_models(
            small_dataset(),
            root,
            quick_options(
                models=("revenue",), mlflow=True, mlflow_dir=mlruns, experiment="t", seed=seed
            ),
            say=lambda _m: None,
        )[0]
        for seed in (1, 2)
    ]
    yield root, trained


def registered(t: TrainedModel) -> tuple[str, str, str]:
    info = t.card.mlflow
    assert info is not None and info.tracking_uri and info.registered_model
    assert info.registered_version is not None
    return info.tracking_uri, info.registered_model, info.registered_version


def champion_tags(uri: str, name: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    version = MlflowClient(tracking_uri=uri).get_model_version_by_alias(name, "champion")
    return {"version": str(version.version), **version.tags}


async def test_champion_follows_activate_rollback_and_reload(
    mongodb_uri: str,
    tracked: tuple[Path, list[TrainedModel]],
    tmp_path: Path,
    client: AsyncMongoClient[Document],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, (first, second) = tracked
    uri, name, v_second = registered(second)
    _, _, v_first = registered(first)
    # Training activated the second version: MLflow's champion says so already.
    assert mlflow_link.champion(uri, name) == v_second
    settings = app_settings(mongodb_uri, root, tmp_path).model_copy(
        update={"mlflow_timeout_seconds": 120.0}  # a loaded machine imports MLflow slowly
    )

    async def switch(http: httpx.AsyncClient, version: str | None) -> dict[str, Any]:
        if version is None:
            answer = await http.post("/v1/models/revenue/reload")
        else:
            answer = await http.post("/v1/models/revenue/activate", json={"version": version})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async with serve(settings) as http:
        rolled_back = await switch(http, first.version)
        assert rolled_back["mlflow"] == {
            "status": "set",
            "registered_model": name,
            "registered_version": v_first,
            "detail": None,
        }
        tags = champion_tags(uri, name)
        activation = (await http.get("/v1/models/revenue")).json()["activation"]
        assert tags["version"] == v_first
        assert tags["champion_by"] == activation["activated_by"] == "admin_key:admin-key"
        assert tags["champion_at"][:10] == activation["activated_at"][:10]

        await switch(http, second.version)
        assert mlflow_link.champion(uri, name) == v_second
        artifacts.write_active(root, "revenue", first.version)  # a deploy script's rollback
        assert (await switch(http, None))["mlflow"]["status"] == "set"
        assert mlflow_link.champion(uri, name) == v_first

        # Live figures land in the serving version's run, beside its test figures.
        logged = [{**FILM, "id": 10 + i} for i in range(3)]
        assert (await http.post("/v1/predict/revenue", json={"items": logged})).is_success
        db = client[settings.mongodb_db]
        deadline = time.monotonic() + 30
        while await prediction_log.count(db, "revenue") < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        report = await run_cli(monkeypatch, settings, ["monitor", "report", "-m", "revenue"])
        assert report.exit_code == 0, report.output
        assert "live metrics logged" in report.output
        from mlflow.tracking import MlflowClient

        info = first.card.mlflow
        assert info is not None
        run = MlflowClient(tracking_uri=uri).get_run(info.run_id)
        assert run.data.metrics["live_drift_n"] == 3.0
        assert run.data.metrics["live_drift_status"] == 0.0  # 3 predictions: too few to judge
        assert "test_rmsle" in run.data.metrics and "live_drift_psi_budget" in run.data.metrics

        # MLflow out of reach: `monitor report` says so and exits 2.
        dead = f"http://127.0.0.1:{free_port()}"
        offline = settings.model_copy(update={"mlflow_tracking_uri": dead})
        failed = await run_cli(monkeypatch, offline, ["monitor", "report", "-m", "revenue"])
        assert failed.exit_code == 2, failed.output
        assert "MLflow unreachable" in failed.output and "serving is unaffected" in failed.output


async def test_an_unreachable_mlflow_never_stops_a_switch(
    mongodb_uri: str, tracked: tuple[Path, list[TrainedModel]], tmp_path: Path
) -> None:
    root, (first, second) = tracked
    uri, name, _ = registered(second)
    before = mlflow_link.champion(uri, name)
    settings = app_settings(mongodb_uri, root, tmp_path).model_copy(
        update={
            "mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}",
            "mlflow_timeout_seconds": 60.0,
        }
    )
    async with serve(settings) as http:
        current = (await http.get("/v1/models/revenue")).json()["active_version"]
        target = first.version if current == second.version else second.version
        started = time.perf_counter()
        answer = await http.post("/v1/models/revenue/activate", json={"version": target})
        assert answer.status_code == 200, answer.text
        assert answer.json()["active_version"] == target
        assert answer.json()["mlflow"]["status"] == "failed"
        assert answer.json()["mlflow"]["detail"]
        assert time.perf_counter() - started < 60
        served = await http.post("/v1/predict/revenue", json={"items": [FILM]})
        assert served.json()["model_version"] == target
    assert mlflow_link.champion(uri, name) == before  # the real store was not touched
