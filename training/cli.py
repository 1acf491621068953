"""`python -m training` and `tmdb-analytics train`: one command trains the three models
(revenue, hit, engagement) from the database (or a CSV), writes versioned artifacts and
activates them."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from app.settings import Settings, get_settings

Say = Callable[[str], None]


class SplitChoice(StrEnum):
    time = "time"
    random = "random"


def train_command(
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            exists=True,
            dir_okay=False,
            help="Train from this TMDB 5000-format CSV instead of the database",
        ),
    ] = None,
    imdb_csv: Annotated[
        Path | None,
        typer.Option(
            "--imdb-csv",
            exists=True,
            dir_okay=False,
            help="With --csv: join directors/actors from this IMDB 5000 file",
        ),
    ] = None,
    artifacts_dir: Annotated[
        Path | None,
        typer.Option(help="Where versions are written (default: ARTIFACTS_DIR, artifacts/)"),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", "-m", help="Train only this model (repeatable): revenue, hit, engagement"
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="One small candidate per family (tests, smoke runs)")
    ] = False,
    split: Annotated[SplitChoice, typer.Option(help="How to hold out films")] = SplitChoice.time,
    seed: Annotated[int, typer.Option()] = 42,
    refit: Annotated[
        bool,
        typer.Option(help="Fit the served model on all films (else on train+validation only)"),
    ] = True,
    activate: Annotated[bool, typer.Option(help="Make the new versions the active ones")] = True,
    report: Annotated[bool, typer.Option(help="Write the HTML evaluation report")] = True,
    mlflow: Annotated[bool, typer.Option(help="Track the run in MLflow")] = True,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else .data/mlruns)"),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="BLAS/OpenMP threads while fitting")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout")] = False,
) -> None:
    """Train revenue, hit and engagement, write artifacts/<model>/<version>/, activate them."""
    from training.data import load_from_csv, load_from_db
    from training.train import train_models
    from training.types import TrainOptions

    settings = get_settings()
    started = time.perf_counter()

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if csv is not None:
        dataset = load_from_csv(csv, imdb_csv)
    else:
        if imdb_csv is not None:
            raise typer.BadParameter("--imdb-csv goes with --csv (the database is enriched)")
        from app.db import ensure_local_db

        ensure_local_db(settings)
        dataset = asyncio.run(load_from_db(settings))
    say(f"read {dataset.size} films from {dataset.source} in {time.perf_counter() - started:.1f}s")
    if dataset.size == 0:
        say("no films to learn from: import some first (tmdb-analytics import tmdb-csv ...)")
        raise typer.Exit(1)
    options = TrainOptions(
        models=tuple(model or ("revenue", "hit", "engagement")),
        quick=quick,
        seed=seed,
        split="time" if split is SplitChoice.time else "random",
        refit_all=refit,
        activate=activate,
        report=report,
        mlflow=mlflow,
        tracking_uri=tracking_uri,
        mlflow_dir=settings.local_db_dir / "mlruns",
        threads=threads,
        activated_by=activated_by(),
    )
    try:
        trained = train_models(dataset, artifacts_dir or settings.artifacts_dir, options, say)
    except ValueError as exc:
        say(f"training failed: {exc}")
        raise typer.Exit(1) from exc
    if activate and trained:
        if artifacts_dir is None or artifacts_dir.resolve() == settings.artifacts_dir.resolve():
            record_activations(settings, [(t.name, t.version) for t in trained], say)
        else:
            say("not recorded as active in the database: --artifacts-dir is not ARTIFACTS_DIR")
    say(f"done in {time.perf_counter() - started:.1f}s")
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "model": t.name,
                        "version": t.version,
                        "path": str(t.path),
                        "active": t.activated,
                        "family": t.card.family,
                        "metrics": t.card.metrics,
                    }
                    for t in trained
                ],
                indent=2,
            )
        )


def record_activations(settings: Settings, active: list[tuple[str, str]], say: Say) -> bool:
    """Record newly activated versions in the database, which running services follow within
    seconds (ACTIVE alone would only reach processes started later). A database out of reach
    is no failure of the training: the message says how to roll the versions out later."""
    from pymongo.errors import PyMongoError

    from app.db import open_db
    from app.services import audit, model_versions

    by = activated_by()

    async def go() -> None:
        async with open_db(settings) as db:
            try:
                for name, version in active:
                    await model_versions.record(db, name, version, by, "training")
                    audit.record_as(
                        db,
                        audit.cli_origin(),
                        "model.activate",
                        target=name,
                        details={"version": version, "source": "training"},
                    )
            finally:
                await audit.close(db)  # written before the client closes

    try:
        asyncio.run(go())
    except PyMongoError as exc:
        say(
            f"not recorded as active in the database ({exc.__class__.__name__}): running "
            "services keep their versions; roll out with POST /v1/models/<name>/reload"
        )
        return False
    say("recorded as active in the database: running services switch within seconds")
    return True


def activated_by() -> str:
    """Who a training run's activation is recorded as (database and MLflow)."""
    return f"training ({_user()}@{socket.gethostname()})"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with an arbitrary uid)
        return "unknown"


def main() -> None:
    typer.run(train_command)
