"""`tmdb-analytics backup create|verify|restore|list`: backups of the database and the active model
artifacts (`app.services.backup`). Progress and reasons go to stderr; `create` prints the path it
wrote as the last line of stdout, and every refusal exits 1 with the reason."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from pymongo.errors import PyMongoError

from app.cli.common import console, run
from app.cli.common import open_db as audited_open_db
from app.db import open_db
from app.services import audit
from app.services.backup import (
    BackupCryptoError,
    BackupError,
    Manifest,
    create_backup,
    list_backups,
    mongorestore_command,
    parse_key,
    prune_backups,
    restore_backup,
    verify_backup,
)
from app.settings import Settings, get_settings

backup_app = typer.Typer(help="Back up, verify, restore and list backups of the database.")
audit_log = logging.getLogger("app.audit")
# A database that failed the backup may not answer the audit write either: do not hang on it.
AUDIT_WRITE_SECONDS = 15.0


def backup_audit_hook(
    settings: Settings, action: str, outcome: str, database: str, **details: object
) -> None:
    """The one call site through which backups and restores reach the audit log: every
    `create` and `restore`, with its outcome (`ok`, `failed`, `refused`), calls it once. The
    entry goes to the service's own database (`MONGODB_DB`, the log `GET /v1/audit` reads;
    after a restore over it, on top of the restored log), naming the database backed up or
    restored into; the same line goes to the `app.audit` logger, which is all that is left
    when the database itself is what failed. Never the key."""
    line = {"action": f"backup.{action}", "outcome": outcome, "database": database, **details}
    audit_log.info(json.dumps(line, default=str))

    async def write() -> None:
        async with audited_open_db(settings) as db:  # flushes the entry before closing
            audit.record_as(
                db,
                audit.cli_origin(),
                f"backup.{action}",
                outcome="success" if outcome == "ok" else "failure",
                target=database,
                details={k: v for k, v in line.items() if k not in ("action", "database")},
            )

    try:
        asyncio.run(asyncio.wait_for(write(), AUDIT_WRITE_SECONDS))
    except (PyMongoError, OSError, TimeoutError) as exc:
        console.print(f"audit entry not stored ({exc.__class__.__name__}: {exc})", markup=False)


def _fail(message: str) -> typer.Exit:
    console.print(message, soft_wrap=True, markup=False, style="red")
    return typer.Exit(1)


def _key(settings: Settings, required: bool) -> bytes | None:
    """BACKUP_KEY as 32 bytes: required to encrypt; to read, only when it is set (an encrypted
    backup read without it is refused by the reader, saying so)."""
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
        f"tmdb-analytics {manifest.service_version}",
        markup=False,
    )
    for name, coll in manifest.collections.items():
        console.print(f"  {name}: {coll.count} documents, {coll.indexes} indexes", markup=False)
    for art in manifest.artifacts:
        console.print(f"  model {art.model} {art.version}: {len(art.files)} files", markup=False)
    for warning in manifest.warnings:
        console.print(f"  warning: {warning}", markup=False, style="yellow")


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
                say=lambda msg: console.print(msg, markup=False),
            )

    try:
        path, manifest = run(go)
    except (BackupError, PyMongoError, OSError) as exc:
        backup_audit_hook(settings, "create", "failed", settings.mongodb_db, reason=str(exc))
        raise _fail(f"backup failed: {exc}") from exc
    total = sum(c.count for c in manifest.collections.values())
    console.print(
        f"backup complete: {len(manifest.collections)} collections, {total} documents, "
        f"{len(manifest.artifacts)} model versions, {path.stat().st_size:,} bytes"
        + (", encrypted" if key else ""),
        markup=False,
    )
    backup_audit_hook(
        settings, "create", "ok", manifest.database, path=str(path), encrypted=key is not None
    )
    if keep is not None:
        for removed in prune_backups(directory, manifest.database, keep):
            console.print(f"removed old backup {removed}", markup=False)
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
    if not path.name.endswith(".enc"):
        console.print(
            f"MongoDB's own tools read it too: {mongorestore_command(path, manifest.database)}",
            markup=False,
            soft_wrap=True,
        )
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
    """Restore a backup into a new database (--db NAME) or over an existing one (--drop), after
    checking all of it; the model artifacts go to ARTIFACTS_DIR."""
    settings = get_settings()
    key = _key(settings, required=False)
    target = settings.model_copy(update={"mongodb_db": db}) if db else settings

    async def go(_settings: Settings) -> None:
        async with open_db(target) as database:
            report = await restore_backup(
                database,
                path,
                key=key,
                artifacts_dir=target.artifacts_dir,
                drop=drop,
                say=lambda msg: console.print(msg, markup=False),
            )
        total = sum(report.collections.values())
        console.print(
            f"restored {len(report.collections)} collections ({total} documents) into "
            f"{report.database}; data version now {report.data_version}",
            markup=False,
        )
        for label in report.artifacts_written:
            console.print(f"  model {label} written to {target.artifacts_dir}", markup=False)
        for label in report.artifacts_present:
            console.print(
                f"  model {label} already in {target.artifacts_dir} (identical)", markup=False
            )

    try:
        run(go)
    except BackupError as exc:
        backup_audit_hook(
            settings, "restore", "refused", target.mongodb_db, path=str(path), reason=str(exc)
        )
        raise _fail(f"restore refused: {exc}") from exc
    except (PyMongoError, OSError) as exc:
        backup_audit_hook(
            settings, "restore", "failed", target.mongodb_db, path=str(path), reason=str(exc)
        )
        raise _fail(
            f"restore failed: {exc}; the database's collections were put back as they were "
            "(or, if even that failed, the next `backup restore` puts them back)"
        ) from exc
    backup_audit_hook(settings, "restore", "ok", target.mongodb_db, path=str(path), drop=drop)


@backup_app.command("list")
def backup_list(
    directory: Annotated[
        Path | None, typer.Argument(help="Directory to list (default: BACKUP_DIR)")
    ] = None,
) -> None:
    """Complete backups in a directory, oldest first: one per line (path, database, created,
    bytes, encrypted), tab-separated for scripts; the column names go to stderr."""
    where = directory or get_settings().backup_dir
    found = list_backups(where)
    if not found:
        console.print(f"no backups in {where}", markup=False)
        return
    console.print("path\tdatabase\tcreated (UTC)\tbytes\tencrypted", markup=False)
    for b in found:
        created = b.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{b.path}\t{b.database}\t{created}\t{b.size}\t{'yes' if b.encrypted else 'no'}")
