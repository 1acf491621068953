"""`tmdb-analytics`: the command line (database, import/export, ingest, serve, accounts).

One module per group of commands: `db` (the embedded database), `data` (import, export,
ingest, bootstrap, serve), `accounts` (users and API keys), `audit` (the audit log),
`reports` (reports as files), `monitor` (drift and live accuracy, for schedulers and
MLflow), `backup` (backups and restores); `common` holds what they share.
`train` is training's own command (training/cli.py owns its options)."""

from __future__ import annotations

import sys

import typer

from app.cli.accounts import keys_app, users_app
from app.cli.audit import audit_command
from app.cli.backup import backup_app
from app.cli.data import bootstrap, export_app, import_app, ingest_app, serve
from app.cli.db import db_app
from app.cli.monitor import monitor_app
from app.cli.reports import report_app
from training.cli import train_command

app = typer.Typer(help="TMDB Analytics Service command line.", no_args_is_help=True)
app.command("train")(train_command)
app.command("serve")(serve)
app.command("bootstrap")(bootstrap)
app.command("audit")(audit_command)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(ingest_app, name="ingest")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(report_app, name="report")
app.add_typer(monitor_app, name="monitor")
app.add_typer(backup_app, name="backup")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
