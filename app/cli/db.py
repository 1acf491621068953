"""`tmdb-analytics db start|stop|status|uri`: the embedded local database, like `pg_ctl`."""

from __future__ import annotations

import typer

from app.cli.common import console
from app.db import local_server, managed_local_server, mongodb_uri
from app.localdb import LocalDbError, LocalServer
from app.settings import Settings, get_settings

db_app = typer.Typer(help="Manage the embedded local database (FerretDB on SQLite).")


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
