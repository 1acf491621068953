"""`tmdb-analytics`: the command line (database, import/export, ingest, serve)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

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

from app.db import ensure_local_db, local_server, make_client, managed_local_server, mongodb_uri
from app.localdb import LocalDbError, LocalServer
from app.services.credentials import Role
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


def _report_migration(migrated: int) -> None:
    if migrated:
        console.print(f"database upgraded: {migrated} films re-keyed by string _id")


T = TypeVar("T")


def _run(factory: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    settings = get_settings()
    ensure_local_db(settings)
    return asyncio.run(factory(settings))


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


def _managed_or_exit(settings: Settings, command: str) -> LocalServer:
    """The local server `command` acts on; a remote MONGODB_URI ends with exit 1, so that a
    script restarting "the database" never believes it did."""
    server = managed_local_server(settings)
    if server is None:
        console.print(
            f"[red]MONGODB_URI ({mongodb_uri(settings)}) is not the local database "
            f"({local_server(settings).uri}); `db {command}` manages only the local one[/red]",
            soft_wrap=True,  # one line, whatever the terminal width: scripts grep it
        )
        raise typer.Exit(1)
    return server


@db_app.command("start")
def db_start() -> None:
    """Start the local database (idempotent); exit 1 when MONGODB_URI names another server."""
    server = _managed_or_exit(get_settings(), "start")
    try:
        started = server.start()
    except LocalDbError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(("started" if started else "already running") + f" at {server.uri}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the local database (idempotent); exit 1 when MONGODB_URI names another server."""
    server = _managed_or_exit(get_settings(), "stop")
    console.print("stopped" if server.stop() else "not running")


@db_app.command("status")
def db_status() -> None:
    """Say whether the local database runs (exit 1 when it does not); a remote MONGODB_URI
    is reported as `external: URI` with exit 0, as nothing here could start it."""
    settings = get_settings()
    server = managed_local_server(settings)
    if server is None:
        print(f"external: {mongodb_uri(settings)}")
        return
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
    from app.services.movies_rewrite import prepare_database

    async def go(settings: Settings) -> None:
        client = make_client(settings)
        try:
            db = client[settings.mongodb_db]
            _report_migration(await prepare_database(db))
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


# --- users / API keys -----------------------------------------------------------------------

users_app = typer.Typer(help="Manage user accounts (they log in at POST /v1/auth/token).")
keys_app = typer.Typer(help="Manage API keys for partner systems (sent as X-API-Key).")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")


def _with_db(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run one credentials operation against the database; a refused operation (duplicate
    user, unknown key, ...) or an unreachable database ends with a message and exit code 1."""
    from pymongo.errors import PyMongoError

    from app.errors import DomainError

    async def go(settings: Settings) -> T:
        client = make_client(settings)
        try:
            return await action(client[settings.mongodb_db])
        finally:
            await client.close()

    try:
        return _run(go)
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    except PyMongoError as exc:
        console.print(f"[red]database unavailable: {exc.__class__.__name__}[/red]")
        raise typer.Exit(1) from exc


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Username (letters, digits, _ . @ -)")],
    role: Annotated[Role, typer.Option(help="viewer, predictor or admin")] = Role.viewer,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="At least 8 characters; prompted for when omitted (keeps it out of history)",
        ),
    ] = "",
) -> None:
    """Create a user who can log in for a bearer token."""
    from app.services.credentials import create_user

    user = _with_db(lambda db: create_user(db, name, role, password))
    console.print(f"created user {user.username!r} with role {user.role.value}")


@users_app.command("list")
def users_list() -> None:
    """List users and their roles."""
    from app.services.credentials import list_users

    users = _with_db(list_users)
    table = Table(title=f"{len(users)} users")
    for column in ("username", "role", "created"):
        table.add_column(column)
    for user in users:
        table.add_row(user.username, user.role.value, f"{user.created_at:%Y-%m-%d %H:%M}")
    Console().print(table)


@users_app.command("delete")
def users_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a user (tokens already issued stay valid until they expire)."""
    from app.services.credentials import delete_user

    _with_db(lambda db: delete_user(db, name))
    console.print(f"deleted user {name!r}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for")],
    role: Annotated[Role, typer.Option(help="viewer, predictor or admin")] = Role.viewer,
) -> None:
    """Create an API key and print it once on stdout (only its hash is stored)."""
    from app.services.credentials import create_api_key

    record, key = _with_db(lambda db: create_api_key(db, name, role))
    console.print(
        f"created API key {record.key_id} ({record.name!r}, role {record.role.value}); "
        "store it now, it cannot be shown again:"
    )
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (ids, names, roles, status; never the keys themselves)."""
    from app.services.credentials import list_api_keys

    keys = _with_db(list_api_keys)
    table = Table(title=f"{len(keys)} API keys")
    for column in ("key_id", "name", "role", "created", "status"):
        table.add_column(column)
    for k in keys:
        status = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        table.add_row(k.key_id, k.name, k.role.value, f"{k.created_at:%Y-%m-%d %H:%M}", status)
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key_id from `keys list`")]) -> None:
    """Revoke an API key (running services stop accepting it within API_KEY_CACHE_SECONDS)."""
    from app.services.credentials import revoke_api_key

    record = _with_db(lambda db: revoke_api_key(db, key_id))
    console.print(f"revoked API key {record.key_id} ({record.name!r})")


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
        client = make_client(settings)
        try:
            db = client[settings.mongodb_db]
            _report_migration(await prepare_database(db))
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
        except (TmdbAuthError, NoSyncPointError, IdsFileError) as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        except TmdbError as exc:
            console.print(
                f"[red]TMDB: {exc}[/red]\nProgress is saved: run the same command to continue."
            )
            raise typer.Exit(1) from exc
        finally:
            await client.close()
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

    _run(go)


# --- train --------------------------------------------------------------------------------

# The same command as `python -m training` (training/cli.py owns its options).
from training.cli import train_command  # noqa: E402

app.command("train")(train_command)


# --- serve --------------------------------------------------------------------------------


@app.command("serve")
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


def _train_if_no_models(settings: Settings) -> None:
    """A first run gets working predictions: train once when no model version exists yet."""
    from app.ml.artifacts import read_active

    missing = [m for m in ("revenue", "hit") if read_active(settings.artifacts_dir, m) is None]
    if not missing:
        return
    console.print(f"[bold]no trained {' / '.join(missing)} model yet: training (about a minute)")
    try:
        train_command()
    except (typer.Exit, SystemExit, Exception) as exc:  # serving analytics must not depend on it
        console.print(f"[yellow]training failed ({exc!r}); predictions stay unavailable[/yellow]")


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
        _train_if_no_models(settings)
        return
    if settings.tmdb_api_token:
        console.print("[bold]no CSVs in DATA_DIR; ingesting from the TMDB API[/bold]")
        ingest_from_tmdb(since=None, max_movies=None)
        _train_if_no_models(settings)
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
