"""`tmdb-analytics monitor`: the served models judged from the prediction log, for schedulers
(`check`) and for MLflow (`report`), and the log itself (`log`). They read the database and
the artifacts directory like the service does; none needs the service to run.

Exit codes (`check`): 0 nothing to do, 1 retraining advised (the reasons are printed), 2 the
models could not be judged (database unreachable, no version). `report`: 0 logged, 2 some
model's figures could not be judged or logged (MLflow unreachable, not installed, or a
version not tracked there); serving is never affected.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pymongo.errors import PyMongoError

from app.cli.common import Since, Until, console, parse_time, run
from app.db import open_db
from app.ml import artifacts
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from app.services.monitoring import Assessment

# The monitoring services (scikit-learn, scipy) and MLflow are imported by the commands that
# use them: every other command of the CLI starts without them.

monitor_app = typer.Typer(help="Drift and live accuracy of the served models.")

Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="Only this model (repeatable): revenue, hit, engagement. Without it, every model "
        "that serves (one never trained is listed and skipped)",
    ),
]
ADVISED, UNJUDGED = 1, 2


def _models(model: list[str] | None) -> list[str]:
    chosen = list(model or artifacts.MODEL_NAMES)
    unknown = [m for m in chosen if m not in artifacts.MODEL_NAMES]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}", param_hint="--model")
    return chosen


class Skipped(str):
    """Why a model that was not asked for by name is not judged (it never served)."""


async def _assess_all(
    settings: Settings, names: list[str], asked: bool
) -> dict[str, Assessment | str]:
    """Per model, its assessment or why there is none (`Skipped` when a model nobody named
    never served: an install that never trained it is not a failure)."""
    from app.services.monitoring import NotServedError, assess

    out: dict[str, Assessment | str] = {}
    async with open_db(settings) as db:
        for name in names:
            try:
                out[name] = await assess(db, settings, name)
            except NotServedError as exc:
                out[name] = str(exc) if asked else Skipped(str(exc))
            except ValueError as exc:
                out[name] = str(exc)
            except PyMongoError as exc:
                out[name] = f"{name}: database unreachable ({exc.__class__.__name__})"
    return out


def _describe(a: Assessment) -> str:
    entry = a.version_live
    live = (
        ", ".join(f"{k} {v:.3f}" for k, v in entry.metrics.items() if isinstance(v, float))
        if entry is not None and entry.n
        else "no outcomes yet"
    )
    return (
        f"{a.watched.name} {a.watched.version}: drift {a.drift.status} over {a.drift.n} "
        f"predictions; live accuracy over {entry.n if entry else 0} films: {live}"
    )


@monitor_app.command("check")
def check(model: Models = None) -> None:
    """Exit 1 when a served model drifts or its live accuracy is worse than its test accuracy
    by more than MONITOR_ACCURACY_MARGIN (so a scheduler can run `tmdb-analytics train`)."""
    names = _models(model)
    found = run(lambda settings: _assess_all(settings, names, model is not None))
    code = 0
    for name in names:
        result = found[name]
        if isinstance(result, Skipped):
            console.print(f"skipped {result}")
            continue
        if isinstance(result, str):
            console.print(f"[red]cannot judge[/red] {result}")
            code = max(code, UNJUDGED)
            continue
        console.print(_describe(result))
        if result.drift.note and result.drift.n:
            console.print(f"  note: {result.drift.note}")
        for reason in result.reasons:
            typer.echo(f"RETRAIN {reason}")  # stdout: what a scheduler's mail shows
        if result.reasons:
            code = max(code, ADVISED)
    if code == 0:
        typer.echo("ok: no retraining advised")
    raise typer.Exit(code)


@monitor_app.command("report")
def report(model: Models = None) -> None:
    """Log the served versions' drift and live accuracy as metrics of their MLflow runs
    (`live_*` beside training's `test_*`)."""
    from app.ml import mlflow_link
    from app.services.mlflow_sync import tracking_uri
    from app.services.monitoring import mlflow_metrics

    names = _models(model)
    found = run(lambda settings: _assess_all(settings, names, model is not None))
    settings = get_settings()  # the same object `run` used (cached)
    mlflow_link.fail_fast(settings.mlflow_timeout_seconds)
    code = 0
    for name in names:
        result = found[name]
        if isinstance(result, Skipped):
            console.print(f"skipped {result}")
            continue
        if isinstance(result, str):
            console.print(f"[red]cannot judge[/red] {result}")
            code = UNJUDGED
            continue
        console.print(_describe(result))
        card = result.watched.card
        uri = tracking_uri(settings, card)
        if card.mlflow is None or uri is None:
            console.print(f"  {name} {card.version}: not tracked in MLflow; nothing logged")
            code = UNJUDGED
            continue
        metrics = mlflow_metrics(result)
        try:
            mlflow_link.log_metrics(uri, card.mlflow.run_id, metrics)
        except Exception as exc:  # any MLflow failure: say so, serving is unaffected
            console.print(
                f"[red]MLflow unreachable or refused[/red] ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}): {name} figures not "
                "logged; serving is unaffected"
            )
            code = UNJUDGED
            continue
        typer.echo(
            f"{name} {card.version}: {len(metrics)} live metrics logged to run {card.mlflow.run_id}"
        )
    raise typer.Exit(code)


MAX_LOGGED = 1_000_000


@monitor_app.command("log")
def show_log(
    model: Annotated[str, typer.Argument(help="revenue, hit or engagement")],
    version: Annotated[str | None, typer.Option(help="Only this model version")] = None,
    since: Since = None,
    until: Until = None,
    film: Annotated[
        list[int] | None,
        typer.Option("--id", help="Only predictions of this TMDB id (repeatable)"),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_LOGGED, help="At most this many predictions")
    ] = 100,
) -> None:
    """Print logged predictions, newest first, one JSON object per line: when, model and
    version, who asked (request id, principal), the film's TMDB id, the inputs as the model saw
    them and its output. The log is stored in compressed chunks; this is how to read it."""
    from app.services import prediction_log

    if model not in artifacts.MODEL_NAMES:
        raise typer.BadParameter(
            f"unknown model {model!r}; one of {', '.join(artifacts.MODEL_NAMES)}",
            param_hint="MODEL",
        )
    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None

    async def go(settings: Settings) -> list[dict[str, Any]]:
        async with open_db(settings) as db:
            return await prediction_log.newest_films(
                db, model, limit, version=version, since=start, until=end, ids=film
            )

    try:
        films = run(go)
    except PyMongoError as exc:
        console.print(f"[red]database unreachable[/red] ({exc.__class__.__name__})")
        raise typer.Exit(UNJUDGED) from None
    for logged in films:
        typer.echo(json.dumps({**logged, "at": logged["at"].isoformat()}, ensure_ascii=False))
