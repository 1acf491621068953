"""`restore_backup`: a backup back into a database, all or nothing.

1. The whole archive is read, decrypted and checked against its manifest (every SHA-256, every
   document count) into a temporary directory: a damaged, tampered or wrong-key backup is
   refused before anything changes.
2. Model artifacts are written to ARTIFACTS_DIR (new version directories only, each appearing
   whole; an existing directory that differs is a refusal, checked before anything is written).
3. Every collection is loaded, documents as raw BSON and then its indexes, into a staging copy
   `_restore_new_<name>` beside the live one. A failure here drops the copies: the database is
   as it was.
4. The swap: each live collection is renamed aside to `_restore_old_<name>` and its copy renamed
   in, `meta` last, whose data version has been raised above both the backup's and the live
   one, so every running service sees new data exactly once and no version number is reused
   for other data (ETags and caches key on it). Then the marker `_restore_done` is made and the
   old collections are dropped.

FerretDB v1 has neither transactions, nor cross-database renames, nor `dropTarget`: renames
within the database are the atomic step it offers. A restore killed during the swap is finished
or undone by the next `backup restore` on the same database (`recover_interrupted`): forward
when the marker exists, otherwise back to the collections put aside.

Like `create`, this module handles every collection by name without interpreting documents:
the one exception to "one owner module per collection".
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure, PyMongoError

from app.db import Document, is_ferretdb
from app.ml import artifacts
from app.services import meta_repo
from app.services.backup.archive import (
    DONE_MARKER,
    STAGING_NEW,
    STAGING_OLD,
    BackupError,
    Manifest,
    Say,
    is_backed_up,
    read_archive,
    read_metadata,
)

INSERT_BATCH_DOCS = 2000
INSERT_BATCH_BYTES = 16 << 20
NAMESPACE_EXISTS = 48
# Swapped in last: the data version changes only once every other collection is in place, so a
# running service rebuilds its snapshot once, on the restored data.
SWAP_LAST = meta_repo.META


@dataclass
class RestoreReport:
    database: str
    collections: dict[str, int]
    artifacts_written: list[str]
    artifacts_present: list[str]
    data_version: int
    replaced: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


# --- documents and indexes ------------------------------------------------------------------


def _raw_batches(path: Path) -> Iterator[list[RawBSONDocument]]:
    """The documents of a `.bson.gz`, as RawBSONDocuments in insert-sized batches."""
    with gzip.open(path, "rb") as source:
        batch: list[RawBSONDocument] = []
        size = 0
        while head := source.read(4):
            length = int.from_bytes(head, "little")
            doc = head + source.read(length - 4)
            batch.append(RawBSONDocument(doc))
            size += length
            if len(batch) >= INSERT_BATCH_DOCS or size >= INSERT_BATCH_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch


async def _insert_all(db: AsyncDatabase[Document], name: str, path: Path) -> int:
    """Insert in batches, parsing the next batch in a thread while this one is written."""
    batches = _raw_batches(path)
    coll = db[name]
    inserted = 0

    def take() -> list[RawBSONDocument] | None:
        return next(batches, None)

    upcoming = asyncio.ensure_future(asyncio.to_thread(take))
    try:
        while (batch := await upcoming) is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(take))
            await coll.insert_many(batch, ordered=False)
            inserted += len(batch)
    finally:
        if not upcoming.done():
            await asyncio.gather(upcoming, return_exceptions=True)
    return inserted


async def _create_indexes(db: AsyncDatabase[Document], name: str, specs: list[Document]) -> None:
    # One at a time: FerretDB v1 panics on a multi-index createIndexes of existing indexes.
    for spec in specs:
        if spec.get("name") == "_id_":
            continue
        clean = {k: v for k, v in spec.items() if k not in ("v", "ns", "background")}
        await db.command("createIndexes", name, indexes=[clean])


# --- model artifacts ------------------------------------------------------------------------


def _plan_artifacts(manifest: Manifest, root: Path) -> tuple[list[str], list[str]]:
    """Which version directories to write and which are already there, identical. A directory
    of the same version holding other files is a conflict: nothing is overwritten."""
    write, present = [], []
    for art in manifest.artifacts:
        target = artifacts.version_dir(root, art.model, art.version)
        label = f"{art.model}/{art.version}"
        if not target.exists():
            write.append(label)
            continue
        for file_name in art.files:
            existing = target / file_name
            wanted = manifest.files[f"artifacts/{label}/{file_name}"].sha256
            if not existing.is_file() or artifacts.sha256_file(existing) != wanted:
                raise BackupError(
                    f"{target} exists and differs from the backup's {label} ({file_name}); "
                    "refusing to overwrite it (move it away, or restore with another "
                    "ARTIFACTS_DIR)"
                )
        present.append(label)
    return write, present


def _write_artifacts(manifest: Manifest, root: Path, extracted: Path, labels: list[str]) -> None:
    for art in manifest.artifacts:
        label = f"{art.model}/{art.version}"
        if label not in labels:
            continue
        target = artifacts.version_dir(root, art.model, art.version)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{art.version}.restore-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for file_name in art.files:
            shutil.copyfile(extracted / "artifacts" / label / file_name, staging / file_name)
        os.replace(staging, target)  # a version directory appears whole, as training makes it
    for model, version in manifest.active_models.items():
        if (root / model).is_dir() and not (root / model / artifacts.ACTIVE_FILE).exists():
            artifacts.write_active(root, model, version)


# --- the swap -------------------------------------------------------------------------------


async def _rename(db: AsyncDatabase[Document], source: str, target: str) -> None:
    """`source` becomes `target`. A `target` that appeared meanwhile (a running service
    recreating an empty collection it writes to) is dropped: the restore replaces it anyway."""
    try:
        await db[source].rename(target)
    except OperationFailure as exc:
        if exc.code != NAMESPACE_EXISTS:
            raise
        await db.drop_collection(target)
        await db[source].rename(target)


async def recover_interrupted(db: AsyncDatabase[Document]) -> list[str]:
    """Finish or undo what a restore killed mid-way left in `db`: with the done marker, the
    collections put aside are dropped (the restore had completed its swap); without it, they
    come back in place of the restored ones. Staging copies are dropped. Returns the names of
    the collections put back."""
    names = set(await db.list_collection_names())
    committed = DONE_MARKER in names
    put_back = []
    for name in sorted(n for n in names if n.startswith(STAGING_OLD)):
        original = name.removeprefix(STAGING_OLD)
        if committed:
            await db.drop_collection(name)
        else:
            if original in names:
                await db.drop_collection(original)
            await db[name].rename(original)
            put_back.append(original)
    for name in names:
        if name.startswith(STAGING_NEW):
            await db.drop_collection(name)
    if committed:
        await db.drop_collection(DONE_MARKER)
    return put_back


async def _load(
    db: AsyncDatabase[Document], manifest: Manifest, work: Path, say: Say
) -> dict[str, int]:
    """Every collection of the backup into its staging copy, with its indexes. MongoDB builds
    an index over loaded documents faster than it maintains it insert by insert (mongorestore
    builds them last); FerretDB v1 the other way round: building one index over 5,000 films
    costs about as much as inserting them with all nine film indexes in place."""
    indexes_first = await is_ferretdb(db)
    restored: dict[str, int] = {}
    for name, entry in manifest.collections.items():
        meta = read_metadata(work / entry.metadata)
        specs = list(meta.get("indexes", []))
        staging = STAGING_NEW + name
        await db.drop_collection(staging)
        await db.create_collection(staging, **dict(meta.get("options") or {}))
        if indexes_first:
            await _create_indexes(db, staging, specs)
        restored[name] = await _insert_all(db, staging, work / entry.bson)
        if not indexes_first:
            await _create_indexes(db, staging, specs)
        say(f"  {name}: {restored[name]} documents, {len(meta.get('indexes', []))} indexes")
    return restored


async def _swap(db: AsyncDatabase[Document], incoming: list[str], outgoing: list[str]) -> None:
    """Live collections named in `outgoing` go aside, and each of `incoming` is renamed in from
    its staging copy, `meta` last. A collection that is not there yet is made (empty) first,
    so that undoing the swap puts every name back as it was, or empty."""
    live = set(await db.list_collection_names())
    order = sorted(set(incoming) | set(outgoing), key=lambda n: (n == SWAP_LAST, n))
    for name in order:
        if name not in live and name in incoming:
            await db.create_collection(name)
        if name in live or name in incoming:
            await _rename(db, name, STAGING_OLD + name)
        if name in incoming:
            await _rename(db, STAGING_NEW + name, name)
    await db.create_collection(DONE_MARKER)


async def _non_empty(db: AsyncDatabase[Document], names: list[str]) -> list[str]:
    return [n for n in names if await db[n].find_one({}, {"_id": 1}) is not None]


# --- restore --------------------------------------------------------------------------------


async def restore_backup(
    db: AsyncDatabase[Document],
    path: Path,
    *,
    key: bytes | None,
    artifacts_dir: Path,
    drop: bool = False,
    say: Say | None = None,
    work_dir: Path | None = None,
) -> RestoreReport:
    """Restore `path` into `db` (see the module's docstring for the steps). Without `drop`, a
    database holding any document is refused; with it, its collections are all replaced (and
    those the backup lacks removed), so the database ends as the backup was. One restore per
    database at a time: a second one would take the first one's staging copies for leftovers."""
    say = say or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="tmdb-restore-", dir=work_dir) as work_name:
        work = Path(work_name)
        say(f"verifying {path.name}")
        manifest = await asyncio.to_thread(read_archive, path, key, work)
        write, present = await asyncio.to_thread(_plan_artifacts, manifest, artifacts_dir)
        recovered = await recover_interrupted(db)
        if recovered:
            say(f"undid an interrupted restore: put back {', '.join(recovered)}")
        existing = sorted(n for n in await db.list_collection_names() if is_backed_up(n))
        non_empty = await _non_empty(db, existing)
        if non_empty and not drop:
            raise BackupError(
                f"database {db.name!r} is not empty (collections {', '.join(non_empty)}); "
                "restore into a new database with --db NAME, or replace its contents with --drop"
            )
        say("backup verified; loading")
        version = 0
        try:
            restored = await _load(db, manifest, work, say)
            floor = await _live_data_version(db)
            if SWAP_LAST in manifest.collections:
                version = await meta_repo.raise_data_version(db, floor, STAGING_NEW + SWAP_LAST)
            await asyncio.to_thread(_write_artifacts, manifest, artifacts_dir, work, write)
            await _swap(db, list(manifest.collections), existing)
        except BaseException:
            await _undo(db)
            raise
        await recover_interrupted(db)  # the swap is done: drop what was put aside
        if SWAP_LAST not in manifest.collections:
            version = await meta_repo.raise_data_version(db, floor)
    say(f"restored into {db.name}; data version {version}")
    return RestoreReport(
        database=db.name,
        collections=restored,
        artifacts_written=write,
        artifacts_present=present,
        data_version=version,
        replaced=non_empty,
        recovered=recovered,
    )


async def _undo(db: AsyncDatabase[Document]) -> None:
    # When even this fails (the database is gone), the next restore finishes the undo.
    with contextlib.suppress(PyMongoError):
        await recover_interrupted(db)


async def _live_data_version(db: AsyncDatabase[Document]) -> int:
    try:
        return await meta_repo.get_data_version(db)
    except (PyMongoError, ValueError, TypeError, KeyError):
        return 0  # an unreadable version: the restored one only has to move on from its own
