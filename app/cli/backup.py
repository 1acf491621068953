"""`tmdb-analytics backup create|verify|restore|list`: backups of the database and the active
model artifacts (`app.services.backup`). Progress and reasons go to stderr; `create` prints the
path it wrote as the last line of stdout, and every refusal exits 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import console, print_table, run
from app.db import open_db
from app.services.backup import (
    BackupError,
    Manifest,
    create_backup,
    list_backups,
    mongorestore_command,
    prune_backups,
    restore_backup,
    verify_backup,
)
from app.services.backup_crypto import BackupCryptoError, parse_key
from app.settings import Settings, get_settings

backup_app = typer.Typer(help="Back up, verify, restore and list backups of the database.")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]{message}[/red]", soft_wrap=True, markup=False, style="red")
    return typer.Exit(1)


def _key(settings: Settings, required: bool) -> bytes | None:
    """BACKUP_KEY as 32 bytes: required to encrypt; to read, only when it is set (an
    encrypted backup without it is refused by the reader, saying so)."""
    secret = settings.backup_key.get_secret_value() if settings.backup_key else None
    if secret is None and not required:
        return None
    try:
        return parse_key(secret)
    except BackupCryptoError as exc:
        raise _fail(str(exc)) from exc


def _describe(manifest: Manifest) -> None:
    console.print(
        f"database {manifest.database}, made {manifest.created_at.isoformat()} by "
        f"tmdb-analytics {manifest.service_version}"
    )
    for name, coll in manifest.collections.items():
        console.print(f"  {name}: {coll.count} documents, {coll.indexes} indexes")
    for art in manifest.artifacts:
        console.print(f"  model {art.model} {art.version}: {len(art.files)} files")
    for warning in manifest.warnings:
        console.print(f"  [yellow]warning:[/yellow] {warning}")


@backup_app.command("create")
def backup_create(
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write to (default: BACKUP_DIR)")
    ] = None,
    encrypt: Annotated[
        bool, typer.Option("--encrypt", help="AES-256-GCM with the key in BACKUP_KEY")
    ] = False,
    keep: Annotated[
        int | None,
        typer.Option("--keep", min=1, help="Then delete this database's oldest backups beyond N"),
    ] = None,
) -> None:
    """Back up every collection (with its indexes) and the active model artifacts; prints the
    backup's path as the last line."""
    settings = get_settings()
    key = _key(settings, required=True) if encrypt else None
    directory = out or settings.backup_dir

    async def go(settings: Settings) -> tuple[Path, Manifest]:
        async with open_db(settings) as db:
            return await create_backup(
                db,
                artifacts_dir=settings.artifacts_dir,
                out_dir=directory,
                key=key,
                say=console.print,
            )

    try:
        path, manifest = run(go)
    except BackupError as exc:
        raise _fail(f"backup failed: {exc}") from exc
    total = sum(c.count for c in manifest.collections.values())
    console.print(
        f"backup complete: {len(manifest.collections)} collections, {total} documents, "
        f"{len(manifest.artifacts)} model versions, {path.stat().st_size:,} bytes"
        + (", encrypted" if key else "")
    )
    if keep is not None:
        for removed in prune_backups(directory, manifest.database, keep):
            console.print(f"removed old backup {removed}")
    print(path)


@backup_app.command("verify")
def backup_verify(
    path: Annotated[Path, typer.Argument(help="The backup file")],
) -> None:
    """Check a backup completely (decryption, every SHA-256 and count); exit 1 if it is
    damaged, tampered with, incomplete or the key is wrong."""
    settings = get_settings()
    try:
        manifest = verify_backup(path, _key(settings, required=False))
    except BackupError as exc:
        raise _fail(f"backup rejected: {exc}") from exc
    _describe(manifest)
    print(f"ok: {path}")


@backup_app.command("restore")
def backup_restore(
    path: Annotated[Path, typer.Argument(help="The backup file")],
    db: Annotated[
        str | None, typer.Option("--db", help="Restore into this database (default: MONGODB_DB)")
    ] = None,
    drop: Annotated[
        bool, typer.Option("--drop", help="Replace the contents of a non-empty database")
    ] = False,
) -> None:
    """Restore a backup into a new database (--db NAME) or over an existing one (--drop),
    after checking all of it; the model artifacts go to ARTIFACTS_DIR."""
    settings = get_settings()
    key = _key(settings, required=False)
    target = settings.model_copy(update={"mongodb_db": db}) if db else settings

    async def go(settings: Settings) -> None:
        async with open_db(settings) as database:
            report = await restore_backup(
                database,
                path,
                key=key,
                artifacts_dir=settings.artifacts_dir,
                drop=drop,
                say=console.print,
            )
        total = sum(report.collections.values())
        console.print(
            f"restored {len(report.collections)} collections ({total} documents) into "
            f"{report.database}; data version now {report.data_version}"
        )
        for label in report.artifacts_written:
            console.print(f"  model {label} written to {settings.artifacts_dir}")
        for label in report.artifacts_present:
            console.print(f"  model {label} already in {settings.artifacts_dir} (identical)")

    try:
        run(lambda _settings: go(target))
    except BackupError as exc:
        raise _fail(f"restore refused: {exc}") from exc


@backup_app.command("list")
def backup_list(
    directory: Annotated[
        Path | None, typer.Argument(help="Directory to list (default: BACKUP_DIR)")
    ] = None,
) -> None:
    """Complete backups in a directory, oldest first."""
    where = directory or get_settings().backup_dir
    found = list_backups(where)
    if not found:
        console.print(f"no backups in {where}")
        return
    print_table(
        f"backups in {where}",
        ("path", "database", "created (UTC)", "bytes", "encrypted"),
        [
            (
                str(b.path),
                b.database,
                b.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{b.size:,}",
                "yes" if b.encrypted else "no",
            )
            for b in found
        ],
    )


def describe_mongorestore(path: Path, database: str) -> str:
    """The MongoDB tools command for an unencrypted backup (shown by the README too)."""
    return mongorestore_command(path, database)
