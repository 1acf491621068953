"""`create_backup`: every collection of the database, with its indexes, and the active model
artifacts, into one archive (the layout is in `app.services.backup.archive`).

Every collection is listed, not named here, so collections that later code adds are backed up
too (except `system.*` and a restore's staging copies). Documents travel as raw BSON
(`find_raw_batches`), never decoded or re-encoded; gzip runs in a thread while the next batch is
read.

The archive is written inside a hidden `.tmdb-backup-*.partial` directory in the target
directory, fsynced, and renamed to its final name only when complete, so a writer killed
mid-way leaves nothing that `list`, `verify` or `restore` accepts. The writer holds a lock on
its partial directory for as long as it runs; the next `create` removes directories whose lock
is free (their writer died).
"""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from bson import json_util
from bson.binary import UUID_SUBTYPE, Binary
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.ml import artifacts
from app.services import model_versions
from app.services.backup.archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PARTIAL_RE,
    ArtifactEntry,
    BackupError,
    CollectionEntry,
    FileEntry,
    Manifest,
    Say,
    backup_name,
    is_backed_up,
    service_version,
)
from app.services.backup.crypto import EncryptingWriter

GZIP_LEVEL = 6  # mongodump's (Go's default compression)
LOCK_FILE = "lock"
# A partial directory without a lock file is a writer killed between `mkdir` and locking, once
# it is this old.
UNLOCKED_GRACE_SECONDS = 60


# --- the partial directory ------------------------------------------------------------------


def _try_lock(path: Path, create: bool = True) -> int | None:
    """An fd holding an exclusive lock on `path`, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_stale_partials(directory: Path) -> list[Path]:
    """Remove the partial directories of writers that died (kill -9, power loss): the kernel
    released their lock. A running writer's directory is left alone, and so is one too young
    to have its lock file yet (its writer is between `mkdir` and locking)."""
    removed = []
    for path in directory.iterdir():
        if not PARTIAL_RE.match(path.name) or not path.is_dir():
            continue
        try:
            fd = _try_lock(path / LOCK_FILE, create=False)
        except FileNotFoundError:
            try:
                young = time.time() - path.stat().st_mtime < UNLOCKED_GRACE_SECONDS
            except FileNotFoundError:
                continue
            if young:
                continue
            fd = None
        else:
            if fd is None:
                continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


@contextmanager
def _partial_dir(out_dir: Path, final: Path) -> Iterator[Path]:
    """A hidden directory beside `final`, locked while this writer lives, removed at the end
    (after the archive inside it has been renamed out, or on failure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(out_dir)
    work = out_dir / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
    work.mkdir()
    fd = _try_lock(work / LOCK_FILE)
    if fd is None:  # nobody else knows this name
        raise BackupError(f"cannot lock {work}")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- collections ----------------------------------------------------------------------------


class _HashingWriter:
    """Passes writes through to `sink`, hashing and counting them."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


class _HashingReader:
    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


def _count_docs(batch: bytes) -> int:
    count, offset, end = 0, 0, len(batch)
    while offset < end:
        offset += int.from_bytes(batch[offset : offset + 4], "little")
        count += 1
    return count


@dataclass
class _Dumped:
    path: Path
    count: int
    sha256: str
    size: int


async def _dump_collection(db: AsyncDatabase[Document], name: str, path: Path) -> _Dumped:
    """`name`'s documents as gzipped concatenated BSON in `path`, read as raw batches (never
    decoded); compression runs in a thread while the next batch is fetched."""
    raw = path.open("wb")
    hashing = _HashingWriter(raw)
    gz = gzip.GzipFile(
        filename="", mode="wb", fileobj=cast(IO[bytes], hashing), compresslevel=GZIP_LEVEL, mtime=0
    )
    count = 0
    pending: asyncio.Future[int] | None = None
    try:
        async for raw_batch in db[name].find_raw_batches({}):
            batch = cast(bytes, raw_batch)  # typed as documents, but raw BSON bytes
            count += _count_docs(batch)
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(gz.write, batch))
        if pending is not None:
            await pending
        gz.close()
        raw.flush()
    finally:
        if pending is not None and not pending.done():
            await asyncio.gather(pending, return_exceptions=True)
        gz.close()
        raw.close()
    return _Dumped(path, count, hashing.digest.hexdigest(), hashing.size)


def metadata_json(name: str, info: Mapping[str, Any], indexes: list[Document]) -> bytes:
    """`<collection>.metadata.json` as mongodump writes it: canonical extended JSON with its
    fields in its order (`options` and `uuid` left out when empty, the UUID as 32 hex digits of
    a subtype-4 binary), so `mongorestore` reads it as one of its own."""
    doc: Document = {}
    options = dict(info.get("options") or {})
    if options:
        doc["options"] = options
    doc["indexes"] = indexes
    raw_uuid = (info.get("info") or {}).get("uuid")
    if isinstance(raw_uuid, Binary) and raw_uuid.subtype == UUID_SUBTYPE:
        doc["uuid"] = bytes(raw_uuid).hex()
    elif isinstance(raw_uuid, uuid.UUID):
        doc["uuid"] = raw_uuid.hex
    doc["collectionName"] = name
    doc["type"] = str(info.get("type", "collection"))
    return json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS).encode()


def _gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


class _TarWriter:
    """The archive being written: members go in one after the other, each hashed."""

    def __init__(self, sink: IO[bytes] | EncryptingWriter) -> None:
        # Streamed ("w|"): nothing is ever sought back to, so the sink may be an encryptor.
        self._tar = tarfile.open(  # noqa: SIM115 (closed by close(), after the manifest)
            None, "w|", cast(IO[bytes], sink), format=tarfile.PAX_FORMAT
        )
        self.files: dict[str, FileEntry] = {}
        self._mtime = int(datetime.now(UTC).timestamp())

    def _info(self, name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, self._mtime, 0o644
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))
        self.files[name] = FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def add_file(self, name: str, path: Path, known: FileEntry | None = None) -> FileEntry:
        size = path.stat().st_size
        with path.open("rb") as handle:
            reader = _HashingReader(handle)
            self._tar.addfile(self._info(name, size), cast(IO[bytes], reader))
        entry = FileEntry(sha256=reader.digest.hexdigest(), size=size)
        if known is not None and known != entry:
            raise BackupError(f"{name} changed while it was being archived")
        self.files[name] = entry
        return entry

    def close(self) -> None:
        self._tar.close()


async def _active_models(
    db: AsyncDatabase[Document], root: Path
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Per model, the version that serves (the database's record, else ACTIVE) and the
    versions to keep: the one the database names and the one ACTIVE names."""
    records = await model_versions.read_all(db, artifacts.MODEL_NAMES)
    active: dict[str, str] = {}
    keep: dict[str, list[str]] = {}
    for name in artifacts.MODEL_NAMES:
        named = records[name].version if name in records else None
        pointer = artifacts.read_active(root, name)
        if named or pointer:
            active[name] = str(named or pointer)
        keep[name] = sorted({v for v in (named, pointer) if v})
    return active, keep


async def _server(db: AsyncDatabase[Document]) -> dict[str, str]:
    info = await db.client.admin.command("buildInfo")
    server = {"version": str(info.get("version", ""))}
    if "ferretdbVersion" in info:
        server["ferretdb"] = str(info["ferretdbVersion"])
    return server


async def _add_collections(
    db: AsyncDatabase[Document], tar: _TarWriter, work: Path, say: Say
) -> dict[str, CollectionEntry]:
    collections: dict[str, CollectionEntry] = {}
    infos = sorted([c async for c in await db.list_collections()], key=lambda c: str(c["name"]))
    for coll in infos:
        name = str(coll["name"])
        if not is_backed_up(name) or coll.get("type", "collection") != "collection":
            continue
        indexes = [dict(ix) async for ix in await db[name].list_indexes()]
        dumped = await _dump_collection(db, name, work / f"{len(collections)}.bson.gz")
        base = f"dump/{db.name}/{name}"
        known = FileEntry(sha256=dumped.sha256, size=dumped.size)
        await asyncio.to_thread(tar.add_file, f"{base}.bson.gz", dumped.path, known)
        dumped.path.unlink()
        tar.add_bytes(f"{base}.metadata.json.gz", _gzip_bytes(metadata_json(name, coll, indexes)))
        collections[name] = CollectionEntry(
            count=dumped.count,
            indexes=len(indexes),
            bson=f"{base}.bson.gz",
            metadata=f"{base}.metadata.json.gz",
        )
        say(f"  {name}: {dumped.count} documents, {len(indexes)} indexes")
    return collections


async def _add_artifacts(
    keep: dict[str, list[str]], root: Path, tar: _TarWriter, say: Say
) -> tuple[list[ArtifactEntry], list[str]]:
    entries: list[ArtifactEntry] = []
    warnings: list[str] = []
    for model, versions in keep.items():
        for version in versions:
            directory = artifacts.version_dir(root, model, version)
            if not directory.is_dir():
                warnings.append(f"model {model} version {version} is not in {root}")
                say(f"warning: {warnings[-1]}")
                continue
            files = sorted(p for p in directory.iterdir() if p.is_file())
            for path in files:
                await asyncio.to_thread(
                    tar.add_file, f"artifacts/{model}/{version}/{path.name}", path
                )
            entries.append(
                ArtifactEntry(model=model, version=version, files=[p.name for p in files])
            )
            say(f"  model {model}/{version}: {len(files)} files")
    return entries, warnings


async def create_backup(
    db: AsyncDatabase[Document],
    *,
    artifacts_dir: Path,
    out_dir: Path,
    key: bytes | None = None,
    say: Say | None = None,
) -> tuple[Path, Manifest]:
    """Write a complete backup of `db` and the active model artifacts into `out_dir`; returns
    its path (only a finished, fsynced archive ever carries the final name)."""
    say = say or (lambda _msg: None)
    now = datetime.now(UTC)
    final = out_dir / backup_name(db.name, now, key is not None)
    server = await _server(db)
    with _partial_dir(out_dir, final) as work:
        archive = work / "archive"
        with archive.open("wb") as raw:
            sink: IO[bytes] | EncryptingWriter = (
                EncryptingWriter(raw, key) if key is not None else raw
            )
            tar = _TarWriter(sink)
            collections = await _add_collections(db, tar, work, say)
            active, keep = await _active_models(db, artifacts_dir)
            artifact_entries, warnings = await _add_artifacts(keep, artifacts_dir, tar, say)
            manifest = Manifest(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                created_at=now,
                database=db.name,
                service_version=service_version(),
                server=server,
                collections=collections,
                artifacts=artifact_entries,
                active_models=active,
                files=dict(tar.files),
                warnings=warnings,
            )
            # The manifest goes last: an archive cut short anywhere before it has none.
            tar.add_bytes(MANIFEST, manifest.model_dump_json(indent=2).encode())
            tar.close()
            if isinstance(sink, EncryptingWriter):
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(archive, final)
        _fsync_dir(out_dir)
    return final, manifest
