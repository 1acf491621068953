"""`tmdb-analytics`: the command line (database, import/export, ingest, serve)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.db import ensure_indexes, local_server, make_client, mongodb_uri
from app.localdb import LocalDbError
from app.settings import Settings, get_settings

app = typer.Typer(help="TMDB Analytics Service command line.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the embedded local database (FerretDB on SQLite).")
import_app = typer.Typer(help="Import films from CSV files.")
export_app = typer.Typer(help="Export films to CSV.")
ingest_app = typer.Typer(help="Ingest films from the TMDB API.")
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(ingest_app, name="ingest")

console = Console(stderr=True)
T = TypeVar("T")


def _run(factory: Callable[[Settings], Awaitable[T]]) -> T:
    settings = get_settings()
    ensure_local_db(settings)
    return asyncio.run(factory(settings))


def ensure_local_db(settings: Settings) -> None:
    """Start the embedded database unless `MONGODB_URI` points elsewhere."""
    if settings.mongodb_uri:
        return
    server = local_server(settings)
    try:
        if server.start():
            console.print(f"[dim]started local database at {server.uri}[/dim]")
    except LocalDbError as exc:
        console.print(f"[red]local database: {exc}[/red]")
        raise typer.Exit(1) from exc


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def print_errors(errors: list[tuple[int, str]], limit: int = 50) -> None:
    for line, reason in errors[:limit]:
        console.print(f"[yellow]line {line}[/yellow]: {reason}")
    if len(errors) > limit:
        console.print(f"... and {len(errors) - limit} more rejected rows")


def print_summary(title: str, counts: dict[str, int]) -> None:
    table = Table(title=title)
    for key in counts:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    Console().print(table)


# --- db -----------------------------------------------------------------------------------


@db_app.command("start")
def db_start() -> None:
    """Start the local database (idempotent)."""
    settings = get_settings()
    if settings.mongodb_uri:
        console.print("MONGODB_URI is set; no local database is managed")
        return
    server = local_server(settings)
    try:
        started = server.start()
    except LocalDbError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(("started" if started else "already running") + f" at {server.uri}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local database (idempotent)."""
    server = local_server(get_settings())
    console.print("stopped" if server.stop() else "not running")


@db_app.command("status")
def db_status() -> None:
    """Say whether the local database runs; exit 1 when it does not."""
    settings = get_settings()
    if settings.mongodb_uri:
        print(f"external: {mongodb_uri(settings)}")
        return
    server = local_server(settings)
    pid = server.pid()
    if pid is None:
        print(f"stopped (data in {server.directory})")
        raise typer.Exit(1)
    print(f"running pid={pid} uri={server.uri} data={server.directory} log={server.logfile}")


@db_app.command("uri")
def db_uri() -> None:
    """Print the MongoDB URI in use."""
    print(mongodb_uri(get_settings()))


# --- import / export ----------------------------------------------------------------------


@import_app.command("tmdb-csv")
def import_tmdb(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Import a TMDB 5000-format CSV (upserts by id; rerunnable)."""
    from app.services.csv_io import import_tmdb_csv

    async def go(settings: Settings) -> None:
        client = make_client(settings)
        try:
            db = client[settings.mongodb_db]
            await ensure_indexes(db)
            with progress_bar() as bar:
                task = bar.add_task("import", total=None, rate="")
                report = await import_tmdb_csv(db, path, progress=lambda n: bar.advance(task, n))
        finally:
            await client.close()
        print_errors(report.errors)
        print_summary(
            f"{path.name}: {report.rows} rows",
            {**report.summary.as_dict(), "imdb_updated": report.imdb_updated},
        )

    _run(go)


@import_app.command("imdb-csv")
def import_imdb(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Join an IMDB 5000-format CSV onto the loaded films (normalized title + year)."""
    from app.services.csv_io import import_imdb_csv

    async def go(settings: Settings) -> None:
        client = make_client(settings)
        try:
            report = await import_imdb_csv(client[settings.mongodb_db], path)
        finally:
            await client.close()
        print_errors(report.errors)
        print_summary(f"{path.name}", report.as_dict())

    _run(go)


@export_app.command("csv")
def export_csv_cmd(path: Annotated[Path, typer.Argument(dir_okay=False)]) -> None:
    """Export every film as TMDB 5000-format CSV (re-importable)."""
    from app.services.csv_io import export_csv

    async def go(settings: Settings) -> None:
        client = make_client(settings)
        try:
            count = await export_csv(client[settings.mongodb_db], path)
        finally:
            await client.close()
        console.print(f"exported {count} films to {path}")

    _run(go)


# --- serve --------------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option()] = 1,
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
        log_level=os.environ.get("LOG_LEVEL", "info").lower(),
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# --- bootstrap (make run) -------------------------------------------------------------------

TMDB_CSV_PATTERNS = ("*tmdb*movies*.csv",)
IMDB_CSV_PATTERNS = ("*imdb*.csv", "movie_metadata.csv")


def _find(directory: Path, patterns: tuple[str, ...]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(found)


@app.command("bootstrap")
def bootstrap() -> None:
    """Start the local database and load data: CSVs in DATA_DIR, else TMDB when a token is set."""
    settings = get_settings()
    ensure_local_db(settings)
    tmdb_files = _find(settings.data_dir, TMDB_CSV_PATTERNS) if settings.data_dir.is_dir() else []
    imdb_files = _find(settings.data_dir, IMDB_CSV_PATTERNS) if settings.data_dir.is_dir() else []
    if tmdb_files:
        for path in tmdb_files:
            console.print(f"[bold]loading[/bold] {path}")
            import_tmdb(path)
        for path in imdb_files:
            console.print(f"[bold]joining IMDB data[/bold] from {path}")
            import_imdb(path)
        return
    if settings.tmdb_api_token:
        console.print("[bold]no CSVs in DATA_DIR; ingesting from the TMDB API[/bold]")
        from app.cli_ingest import ingest_from_tmdb

        ingest_from_tmdb(since=None, max_movies=None)
        return
    console.print(
        f"[yellow]No data loaded:[/yellow] no TMDB CSV in DATA_DIR={settings.data_dir} and no "
        "TMDB_API_TOKEN. The service starts with whatever the database holds. To load data, "
        "put the Kaggle files (tmdb_5000_movies.csv, movie_metadata.csv) in DATA_DIR and rerun "
        "`make run`, or run `make run DATA_DIR=../shared/data`, or set TMDB_API_TOKEN, or use "
        "`tmdb-analytics import tmdb-csv PATH`."
    )


if __name__ == "__main__":
    main()
