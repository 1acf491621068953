"""The data commands: `import tmdb-csv|imdb-csv`, `export csv`, `ingest tmdb`, and the two
that `make run` calls, `bootstrap` (start the database, load data, train once) and `serve`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pymongo.asynchronous.database import AsyncDatabase

from app.cli.common import (
    console,
    open_db,
    print_errors,
    print_summary,
    progress_bar,
    report_migration,
    run,
)
from app.db import Document, ensure_local_db
from app.settings import Settings, get_settings
from training.cli import train_command

import_app = typer.Typer(help="Import films from CSV files.")
export_app = typer.Typer(help="Export films to CSV.")
ingest_app = typer.Typer(help="Ingest films from the TMDB API.")


# --- import / export ----------------------------------------------------------------------


@asynccontextmanager
async def audited(
    db: AsyncDatabase[Document], action: str, target: Path | str
) -> AsyncIterator[dict[str, Any]]:
    """Audit the command's work (`data.import`, `data.ingest`) with the details it fills in:
    a success when the block ends, a failure with the error's class and message when it
    raises (the file name, never its content; no secret is in these messages)."""
    from app.services import audit

    details: dict[str, Any] = {}
    name = target.name if isinstance(target, Path) else target
    origin = audit.cli_origin()
    try:
        yield details
    except (Exception, KeyboardInterrupt) as exc:
        reason = f"{exc.__class__.__name__}: {exc}"[:500]
        audit.record_as(
            db,
            origin,
            action,
            outcome="failure",
            target=name,
            details={**details, "reason": reason},
        )
        raise
    audit.record_as(db, origin, action, target=name, details=details)


@import_app.command("tmdb-csv")
def import_tmdb(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Import a TMDB 5000-format CSV (upserts by id; rerunnable)."""
    from app.services.csv_io import import_tmdb_csv
    from app.services.movies_rewrite import prepare_database

    async def go(settings: Settings) -> None:
        async with open_db(settings) as db, audited(db, "data.import", path) as details:
            details["kind"] = "tmdb-csv"
            report_migration(await prepare_database(db))
            with progress_bar() as bar:
                task = bar.add_task("import", total=None, rate="")
                report = await import_tmdb_csv(db, path, progress=lambda n: bar.advance(task, n))
            details.update(
                rows=report.rows,
                rejected_rows=len(report.errors),
                imdb_updated=report.imdb_updated,
                **report.summary.as_dict(),
            )
        print_errors(report.errors, source=path.name, settings=settings)
        print_summary(
            f"{path.name}: {report.rows} rows",
            {**report.summary.as_dict(), "imdb_updated": report.imdb_updated},
        )

    _run_import(go)


@import_app.command("imdb-csv")
def import_imdb(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Join an IMDB 5000-format CSV onto the loaded films (normalized title + year)."""
    from app.services.csv_io import import_imdb_csv

    async def go(settings: Settings) -> None:
        async with open_db(settings) as db, audited(db, "data.import", path) as details:
            details["kind"] = "imdb-csv"
            report = await import_imdb_csv(db, path)
            details.update(report.as_dict())
        print_errors(report.errors, source=path.name, settings=settings)
        print_summary(f"{path.name}", report.as_dict())

    _run_import(go)


def _run_import(go: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Run an import; a file that is not in the expected format is said in one line (exit 2),
    not as a traceback (the audit log has it as a failure)."""
    from app.services.csv_io import CsvFormatError

    try:
        run(go)
    except CsvFormatError as exc:
        console.print(f"[red]not imported:[/red] {exc}")
        raise typer.Exit(2) from None


@export_app.command("csv")
def export_csv_cmd(path: Annotated[Path, typer.Argument(dir_okay=False)]) -> None:
    """Export every film as TMDB 5000-format CSV (re-importable)."""
    from app.services.csv_io import export_csv

    async def go(settings: Settings) -> None:
        async with open_db(settings) as db:
            count = await export_csv(db, path)
        console.print(f"exported {count} films to {path}")

    run(go)


# --- ingest -------------------------------------------------------------------------------


@ingest_app.command("tmdb")
def ingest_tmdb_cmd(
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            metavar="DATE",
            help="Incremental mode: refetch the films TMDB changed since DATE (YYYY-MM-DD).",
        ),
    ] = None,
    incremental: Annotated[
        bool,
        typer.Option(
            "--incremental",
            help="Incremental mode from where the last successful sync (full or incremental)"
            " ended; --since overrides.",
        ),
    ] = False,
    ids_file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            metavar="PATH",
            help="Full sync listed by TMDB's daily id export (movie_ids_MM_DD_YYYY.json.gz):"
            " every film it lists, undated ones included.",
        ),
    ] = None,
    max_movies: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Fetch at most N films; the run stays resumable."),
    ] = None,
) -> None:
    """Ingest films from the TMDB API (needs TMDB_API_TOKEN; resumable; upserts by id)."""
    if ids_file is not None and (since is not None or incremental):
        raise typer.BadParameter(
            "--ids-file lists a full sync; it does not go with --since/--incremental",
            param_hint="--ids-file",
        )
    today = datetime.now(UTC).date()
    if since is not None and since.date() > today:
        raise typer.BadParameter(
            f"{since.date()} is after today ({today}, UTC): nothing can have changed since",
            param_hint="--since",
        )
    ingest_from_tmdb(
        since=since.date() if since else None,
        max_movies=max_movies,
        incremental=incremental,
        ids_file=ids_file,
    )


def ingest_from_tmdb(
    since: date | None,
    max_movies: int | None,
    incremental: bool = False,
    ids_file: Path | None = None,
) -> None:
    """The body of `ingest tmdb`, also called by `bootstrap`; exits 1 on a missing or
    rejected token, when TMDB keeps failing (the run is then resumable), on an unreadable
    ids file, and for `--incremental` before any successful sync."""
    import time

    from app.services.movies_rewrite import prepare_database
    from app.services.tmdb_client import TmdbAuthError, TmdbClient, TmdbError
    from app.services.tmdb_ingest import (
        IdsFileError,
        IngestOptions,
        IngestProgress,
        NoSyncPointError,
        ingest_tmdb,
    )

    settings = get_settings()
    if not settings.tmdb_api_token:
        console.print(
            "[red]TMDB_API_TOKEN is not set.[/red] Create an API Read Access Token at "
            "https://www.themoviedb.org/settings/api and export TMDB_API_TOKEN=<token>."
        )
        raise typer.Exit(1)
    options = IngestOptions(
        since=since, incremental=incremental, ids_file=ids_file, max_movies=max_movies
    )

    async def go(settings: Settings) -> None:
        try:
            async with (
                open_db(settings) as db,
                audited(db, "data.ingest", "tmdb") as details,
            ):
                details.update(
                    since=str(since) if since else None,
                    incremental=incremental,
                    ids_file=ids_file.name if ids_file else None,
                    max_movies=max_movies,
                )
                report_migration(await prepare_database(db))
                async with TmdbClient.from_settings(settings) as tmdb:
                    with progress_bar() as bar:
                        task = bar.add_task("ingest tmdb", total=None, rate="")
                        started = time.monotonic()

                        def show(p: IngestProgress) -> None:
                            elapsed = max(time.monotonic() - started, 1e-3)
                            rate = (
                                f"{p.completed / elapsed:.1f} films/s, "
                                f"{p.requests / elapsed:.1f} req/s, {p.retries} retries"
                            )
                            bar.update(task, completed=p.completed, total=p.total, rate=rate)

                        summary = await ingest_tmdb(db, tmdb, options, progress=show)
                details.update(
                    run_id=summary.run_id,
                    kind=summary.kind,
                    status=summary.status,
                    resumed=summary.resumed,
                    **summary.as_dict(),
                )
        except (TmdbAuthError, NoSyncPointError, IdsFileError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        except TmdbError as exc:
            console.print(
                f"[red]TMDB: {exc}[/red]\nProgress is saved: run the same command to continue."
            )
            raise typer.Exit(1) from exc
        for warning in summary.warnings:
            console.print(f"[yellow]warning[/yellow]: {warning}")
        for error in summary.errors[:20]:
            console.print(f"[yellow]film {error['id']}[/yellow] {error['kind']}: {error['reason']}")
        if len(summary.errors) > 20:
            console.print(f"... and {len(summary.errors) - 20} more (see ingest_runs)")
        if summary.status == "paused":
            console.print("stopped at --max-movies; run the command again to continue")
        if summary.since is not None:
            remembered = "" if since else " (where the last successful sync ended)"
            console.print(f"incremental: the films TMDB changed since {summary.since}{remembered}")
        resumed = "resumed " if summary.resumed else ""
        print_summary(
            f"TMDB {summary.kind} ingest, {resumed}run {summary.run_id}: {summary.status}",
            summary.as_dict(),
        )

    run(go)


# --- serve --------------------------------------------------------------------------------


def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
    worker_healthcheck_timeout: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --workers: seconds a worker may take to answer the supervisor's ping "
            "(including its start) before it is killed and replaced",
        ),
    ] = 60,
) -> None:
    """Run the HTTP service (starts the local database when MONGODB_URI is unset)."""
    import uvicorn

    ensure_local_db(get_settings())
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # uvicorn's 5 s default counts from spawn: re-importing this CLI in each new worker
        # takes longer than that on a busy machine, and workers were killed and respawned
        # forever without ever serving.
        timeout_worker_healthcheck=worker_healthcheck_timeout,
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
        # The app writes one JSON access line per request (app.observability).
        access_log=False,
    )


# --- bootstrap (make run) -------------------------------------------------------------------

TMDB_CSV_PATTERNS = ("*tmdb*movies*.csv",)
IMDB_CSV_PATTERNS = ("*imdb*.csv", "movie_metadata.csv")


def _find(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(found)


def _train_if_no_models(settings: Settings) -> None:
    """A first run gets working predictions: train the models that have no version yet (all
    of them on a first run; on an install upgraded to a new model, just that one)."""
    from app.ml.artifacts import MODEL_NAMES, read_active

    missing = [m for m in MODEL_NAMES if read_active(settings.artifacts_dir, m) is None]
    if not missing:
        return
    console.print(f"[bold]no trained {' / '.join(missing)} model yet: training (a few minutes)")
    try:
        train_command(model=missing)
    except (typer.Exit, SystemExit, Exception) as exc:  # serving analytics must not depend on it
        console.print(f"[yellow]training failed ({exc!r}); predictions stay unavailable[/yellow]")


SHOWN_URLS = "Where `serve` will listen (for the URLs printed at the end)"


def bootstrap(
    host: Annotated[str, typer.Option(help="Where `serve` will listen (for the URLs shown)")] = (
        "127.0.0.1"
    ),
    port: Annotated[
        int, typer.Option(help="Where `serve` will listen (for the URLs shown)")
    ] = 8000,
) -> None:
    """Start the local database and load data: CSVs in DATA_DIR, else TMDB when a token is set;
    train the models without a version (from the stored films when there is nothing to load).
    In development, make a local admin the first time and say how to log in."""
    settings = get_settings()
    ensure_local_db(settings)
    _load_data(settings)
    _welcome(settings, host, port)


def _load_data(settings: Settings) -> None:
    tmdb_files = _find(settings.data_dir, TMDB_CSV_PATTERNS) if settings.data_dir.is_dir() else []
    imdb_files = _find(settings.data_dir, IMDB_CSV_PATTERNS) if settings.data_dir.is_dir() else []
    if tmdb_files:
        for path in tmdb_files:
            console.print(f"[bold]loading[/bold] {path}")
            import_tmdb(path)
        for path in imdb_files:
            console.print(f"[bold]joining IMDB data[/bold] from {path}")
            import_imdb(path)
        _train_if_no_models(settings)
        return
    if settings.tmdb_api_token:
        console.print("[bold]no CSVs in DATA_DIR; ingesting from the TMDB API[/bold]")
        ingest_from_tmdb(since=None, max_movies=None)
        _train_if_no_models(settings)
        return
    stored = _stored_films(settings)
    if stored:
        # A database filled by an earlier run (or a restore) still needs every model: an
        # install upgraded to a release with a new model gets it from the stored films.
        console.print(
            f"no TMDB CSV in DATA_DIR={settings.data_dir} and no TMDB_API_TOKEN: serving the "
            f"{stored:,} films the database holds"
        )
        _train_if_no_models(settings)
        return
    console.print(
        f"[yellow]No data loaded:[/yellow] no TMDB CSV in DATA_DIR={settings.data_dir} and no "
        "TMDB_API_TOKEN. The service starts with whatever the database holds. To load data, "
        "put the Kaggle files (tmdb_5000_movies.csv, movie_metadata.csv) in DATA_DIR and rerun "
        "`make run`, or run `make run DATA_DIR=../shared/data`, or set TMDB_API_TOKEN, or use "
        "`tmdb-analytics import tmdb-csv PATH`."
    )


def _stored_films(settings: Settings) -> int:
    """How many films the database holds (an estimate from the collection's metadata)."""
    from app.services.movies_repo import estimated_count

    async def go(settings: Settings) -> int:
        async with open_db(settings) as db:
            return await estimated_count(db)

    return int(run(go))


def _welcome(settings: Settings, host: str, port: int) -> None:
    """Create the first-run admin (development only) and print, once, how to get in."""
    from app.services.first_run import ensure_local_admin

    async def go(settings: Settings) -> None:
        async with open_db(settings) as db:
            admin = await ensure_local_admin(db, settings)
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        if admin is not None:
            console.print(
                f"\n[bold green]A local admin account was created (development only; shown "
                f"once, also saved in {admin.saved_to}):[/bold green]\n"
                f"  username: [bold]{admin.username}[/bold]\n"
                f"  password: [bold]{admin.password}[/bold]\n"
                f"  API key:  [bold]{admin.api_key}[/bold]\n"
                f"Dashboards: {base}/ui (log in with the username and password)\n"
                f"Swagger:    {base}/docs (Authorize: the username and password, or the API key)\n"
            )
        else:
            console.print(f"\nDashboards: {base}/ui    Swagger: {base}/docs\n")

    run(go)
