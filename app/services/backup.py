"""Backups of the service's database and active model artifacts: create, verify, restore, list.

A backup is one tar file (`tmdb-backup-<db>-<UTC stamp>.tar`, or `.tar.enc` encrypted with
`app.services.backup_crypto`) holding, in `mongodump --gzip` layout:

    dump/<db>/<collection>.bson.gz            the documents, concatenated BSON, gzipped
    dump/<db>/<collection>.metadata.json.gz   {"indexes": [...], "uuid", "collectionName", ...}
    artifacts/<model>/<version>/<file>        the active model versions
    manifest.json                             last: what the archive holds, with SHA-256s

Every collection of the database is included (listed, not named here, so collections that
later code adds are backed up too), except `system.*`. This module reads and writes them all
by name, as a dump tool does; it is the one exception to "one owner module per collection",
and it never interprets a document: documents travel as raw BSON (`find_raw_batches`, then
`insert_many` of `RawBSONDocument`s), without being decoded or re-encoded.

The archive is written under a hidden temporary name in the target directory, fsynced and
renamed when complete, so a writer killed mid-way leaves nothing that `list`, `verify` or
`restore` accepts (the temporary file lacks the manifest, or the encrypted final chunk, and
its name is refused). `restore` checks everything (decryption, every SHA-256, every count,
the artifacts it would write) before it changes the database or ARTIFACTS_DIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument
from pydantic import BaseModel, ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, CollectionInvalid, PyMongoError

from app.db import Document
from app.ml import artifacts
from app.services import meta_repo, model_versions
from app.services.backup_crypto import (
    BackupCryptoError,
    DecryptingReader,
    EncryptingWriter,
    is_encrypted,
)

FORMAT = "tmdb-analytics-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREFIX = "tmdb-backup-"
NAME_RE = re.compile(
    r"^tmdb-backup-(?P<db>[A-Za-z0-9_-]+)-(?P<stamp>[0-9]{8}T[0-9]{12}Z)\.tar(?P<enc>\.enc)?$"
)
PARTIAL_RE = re.compile(r"^\.tmdb-backup-.*\.(?P<pid>[0-9]+)\.partial$")
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
COPY_CHUNK = 1 << 20
GZIP_LEVEL = 6  # mongodump's (Go's default compression)
INSERT_BATCH_DOCS = 2000
INSERT_BATCH_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 64 << 20
# Restored last: the data version appears only once every film is back, so a running service
# rebuilds its snapshot once, on the restored data.
RESTORE_LAST = meta_repo.META
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.-]+$")

Say = Callable[[str], None]


class BackupError(RuntimeError):
    """A backup that cannot be made, read, trusted or restored here; the message says why."""


# --- the manifest ---------------------------------------------------------------------------


class FileEntry(BaseModel):
    sha256: str
    size: int


class CollectionEntry(BaseModel):
    count: int
    indexes: int
    bson: str
    metadata: str


class ArtifactEntry(BaseModel):
    model: str
    version: str
    files: list[str]


class Manifest(BaseModel):
    format: str
    format_version: int
    created_at: datetime
    database: str
    service_version: str
    server: dict[str, str]
    collections: dict[str, CollectionEntry]
    artifacts: list[ArtifactEntry]
    active_models: dict[str, str]
    files: dict[str, FileEntry]
    warnings: list[str] = []


@dataclass
class BackupFile:
    """A complete backup found by its name in a directory."""

    path: Path
    database: str
    created_at: datetime
    size: int
    encrypted: bool


@dataclass
class RestoreReport:
    database: str
    collections: dict[str, int]
    artifacts_written: list[str]
    artifacts_present: list[str]
    data_version: int
    dropped: list[str] = field(default_factory=list)


# --- names, listing, pruning ----------------------------------------------------------------


def backup_name(database: str, when: datetime, encrypted: bool) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", database):
        raise BackupError(f"database name {database!r} cannot be part of a backup file name")
    return f"{PREFIX}{database}-{when.strftime(STAMP_FORMAT)}.tar" + (".enc" if encrypted else "")


def list_backups(directory: Path) -> list[BackupFile]:
    """Complete backups in `directory` (by name: temporary files never match), oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = NAME_RE.match(path.name)
        if match is None or not path.is_file():
            continue
        created = datetime.strptime(match["stamp"], STAMP_FORMAT).replace(tzinfo=UTC)
        found.append(
            BackupFile(path, match["db"], created, path.stat().st_size, bool(match["enc"]))
        )
    return sorted(found, key=lambda b: (b.created_at, b.path.name))


def prune_backups(directory: Path, database: str, keep: int) -> list[Path]:
    """Delete the oldest backups of `database` beyond the newest `keep` (files named by this
    tool only); returns what was deleted."""
    if keep < 1:
        raise BackupError("--keep must be at least 1")
    mine = [b for b in list_backups(directory) if b.database == database]
    doomed = [b.path for b in mine[:-keep]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def _clean_stale_partials(directory: Path) -> None:
    """Temporary files of writers that died (kill -9, power loss): their pid is gone."""
    for path in directory.iterdir():
        match = PARTIAL_RE.match(path.name)
        if match is None:
            continue
        pid = int(match["pid"])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass


def _target_names(
    out_dir: Path, database: str, now: datetime, encrypted: bool
) -> tuple[Path, Path]:
    """The backup's final name and the temporary one it is written under."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale_partials(out_dir)
    final = out_dir / backup_name(database, now, encrypted)
    return final, out_dir / f".{final.name}.{os.getpid()}.partial"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def service_version() -> str:
    try:
        return metadata.version("tmdb-analytics")
    except metadata.PackageNotFoundError:
        return "unknown"


def mongorestore_command(path: Path, database: str) -> str:
    """How to load an unencrypted backup with MongoDB's own tools."""
    return (
        f"mkdir restore && tar -xf {path} -C restore && "
        f'mongorestore --uri "$MONGODB_URI" --gzip --dir restore/dump '
        f"--nsInclude '{database}.*'"
    )


# --- create ---------------------------------------------------------------------------------


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


def _metadata_json(name: str, info: Mapping[str, Any], indexes: list[Document]) -> bytes:
    """`<collection>.metadata.json` as mongodump writes it (canonical extended JSON)."""
    raw_uuid = (info.get("info") or {}).get("uuid")
    uuid_hex = uuid.UUID(bytes=bytes(raw_uuid)).hex if raw_uuid is not None else uuid.uuid4().hex
    doc = {
        "indexes": indexes,
        "uuid": uuid_hex,
        "collectionName": name,
        "type": info.get("type", "collection"),
        "options": info.get("options") or {},
    }
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


async def create_backup(
    db: AsyncDatabase[Document],
    *,
    artifacts_dir: Path,
    out_dir: Path,
    key: bytes | None = None,
    say: Say | None = None,
    work_dir: Path | None = None,
) -> tuple[Path, Manifest]:
    """Write a complete backup of `db` and the active model artifacts into `out_dir`; returns
    its path (only a finished, fsynced archive ever carries the final name)."""
    say = say or (lambda _msg: None)
    now = datetime.now(UTC)
    final, partial = _target_names(out_dir, db.name, now, key is not None)
    info = await db.client.admin.command("buildInfo")
    server = {"version": str(info.get("version", ""))}
    if "ferretdbVersion" in info:
        server["ferretdb"] = str(info["ferretdbVersion"])
    collections: dict[str, CollectionEntry] = {}
    artifact_entries: list[ArtifactEntry] = []
    warnings: list[str] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="tmdb-backup-", dir=work_dir) as work_name,
            partial.open("wb") as raw,
        ):
            work = Path(work_name)
            sink: IO[bytes] | EncryptingWriter = (
                EncryptingWriter(raw, key) if key is not None else raw
            )
            tar = _TarWriter(sink)
            infos = sorted(
                [c async for c in await db.list_collections()], key=lambda c: str(c["name"])
            )
            for coll in infos:
                name = str(coll["name"])
                if name.startswith("system.") or coll.get("type", "collection") != "collection":
                    continue
                say(f"dumping {name}")
                indexes = [dict(ix) async for ix in await db[name].list_indexes()]
                dumped = await _dump_collection(db, name, work / f"{len(collections)}.bson.gz")
                base = f"dump/{db.name}/{name}"
                known = FileEntry(sha256=dumped.sha256, size=dumped.size)
                await asyncio.to_thread(tar.add_file, f"{base}.bson.gz", dumped.path, known)
                dumped.path.unlink()
                tar.add_bytes(
                    f"{base}.metadata.json.gz", _gzip_bytes(_metadata_json(name, coll, indexes))
                )
                collections[name] = CollectionEntry(
                    count=dumped.count,
                    indexes=len(indexes),
                    bson=f"{base}.bson.gz",
                    metadata=f"{base}.metadata.json.gz",
                )
                say(f"  {name}: {dumped.count} documents, {len(indexes)} indexes")
            active, keep = await _active_models(db, artifacts_dir)
            for model, versions in keep.items():
                for version in versions:
                    directory = artifacts.version_dir(artifacts_dir, model, version)
                    if not directory.is_dir():
                        warnings.append(
                            f"model {model} version {version} is not in {artifacts_dir}"
                        )
                        say(f"[warning] {warnings[-1]}")
                        continue
                    files = sorted(p for p in directory.iterdir() if p.is_file())
                    for path in files:
                        await asyncio.to_thread(
                            tar.add_file, f"artifacts/{model}/{version}/{path.name}", path
                        )
                    artifact_entries.append(
                        ArtifactEntry(model=model, version=version, files=[p.name for p in files])
                    )
                    say(f"  artifacts {model}/{version}: {len(files)} files")
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
            tar.add_bytes(MANIFEST, manifest.model_dump_json(indent=2).encode())
            tar.close()
            if isinstance(sink, EncryptingWriter):
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, final)
        _fsync_dir(out_dir)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return final, manifest


# --- read and verify ------------------------------------------------------------------------


class _DocCounter:
    """Counts concatenated BSON documents fed in arbitrary pieces; refuses a partial one."""

    def __init__(self) -> None:
        self.count = 0
        self._skip = 0
        self._head = b""

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            take = data[i : i + 4 - len(self._head)]
            self._head += take
            i += len(take)
            if len(self._head) == 4:
                size = int.from_bytes(self._head, "little")
                if size < 5:
                    raise BackupError("a document is malformed (bad BSON length)")
                self._head, self._skip = b"", size - 4
                self.count += 1

    def close(self) -> None:
        if self._skip or self._head:
            raise BackupError("the last document is cut short")


@dataclass
class _Member:
    sha256: str
    size: int
    count: int | None


def _member_kind(name: str) -> str:
    """What a member may be; anything else (absolute paths, `..`, odd names) is refused."""
    parts = PurePosixPath(name).parts
    if name == MANIFEST:
        return "manifest"
    if len(parts) == 3 and parts[0] == "dump" and _SAFE_PART.match(parts[1]):
        if parts[2].endswith(".bson.gz") and "/" not in parts[2] and parts[2] != ".bson.gz":
            return "bson"
        if parts[2].endswith(".metadata.json.gz"):
            return "metadata"
    if (
        len(parts) == 4
        and parts[0] == "artifacts"
        and all(_SAFE_PART.match(p) and p not in (".", "..") for p in parts[1:])
        and artifacts.VERSION_RE.match(parts[2])
    ):
        return "artifact"
    raise BackupError(f"unexpected member {name!r} in the archive")


def _copy_member(
    source: IO[bytes], kind: str, sink_path: Path | None
) -> tuple[str, int, int | None]:
    digest = hashlib.sha256()
    size = 0
    counter = _DocCounter() if kind == "bson" else None
    inflate = zlib.decompressobj(wbits=31) if kind in ("bson", "metadata") else None
    sink = sink_path.open("wb") if sink_path is not None else None
    try:
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if sink is not None:
                sink.write(chunk)
            if inflate is not None:
                try:
                    plain = inflate.decompress(chunk)
                except zlib.error as exc:
                    raise BackupError(f"not valid gzip: {exc}") from exc
                if counter is not None:
                    counter.feed(plain)
        if inflate is not None and (not inflate.eof or inflate.unused_data):
            raise BackupError("the gzip stream is cut short or followed by junk")
        if counter is not None:
            counter.close()
    finally:
        if sink is not None:
            sink.close()
    return digest.hexdigest(), size, counter.count if counter is not None else None


@contextlib.contextmanager
def _plain_stream(path: Path, key: bytes | None) -> Iterator[tuple[BinaryIO, Callable[[], None]]]:
    """The archive's plain bytes (decrypted when encrypted) and a check to call at the end."""
    if path.name.endswith(".partial"):
        raise BackupError(
            f"{path.name} is the temporary file of a backup that did not finish; it is not a backup"
        )
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with handle:
        head = handle.read(16)
        handle.seek(0)
        if is_encrypted(head):
            if key is None:
                raise BackupError(
                    "this backup is encrypted: set BACKUP_KEY to the key it was made with"
                )
            try:
                reader = DecryptingReader(handle, key)
            except BackupCryptoError as exc:
                raise BackupError(str(exc)) from exc
            yield cast(BinaryIO, reader), reader.finish
        else:
            yield handle, lambda: None


def read_archive(path: Path, key: bytes | None, extract_to: Path | None = None) -> Manifest:
    """Read the whole archive, check it against its manifest (every file's SHA-256 and size,
    every collection's document count, gzip and BSON framing), optionally extracting it to
    `extract_to`. Raises BackupError with the reason on anything amiss."""
    try:
        with _plain_stream(path, key) as (stream, finish):
            members: dict[str, _Member] = {}
            manifest: Manifest | None = None
            try:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        if manifest is not None:
                            raise BackupError("the archive has members after its manifest")
                        kind = _member_kind(member.name)
                        if not member.isreg():
                            raise BackupError(f"{member.name} is not a regular file")
                        if member.name in members:
                            raise BackupError(f"{member.name} appears twice")
                        source = tar.extractfile(member)
                        assert source is not None  # regular files always have data
                        if kind == "manifest":
                            if member.size > MAX_MANIFEST_BYTES:
                                raise BackupError("the manifest is implausibly large")
                            manifest = _parse_manifest(source.read())
                            continue
                        target = None
                        if extract_to is not None:
                            target = extract_to / member.name
                            target.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            digest, size, count = _copy_member(source, kind, target)
                        except BackupError as exc:
                            raise BackupError(f"{member.name}: {exc}") from exc
                        if size != member.size:
                            raise BackupError(f"{member.name} is cut short")
                        members[member.name] = _Member(digest, size, count)
            except tarfile.TarError as exc:
                raise BackupError(f"the archive is damaged or cut short ({exc})") from exc
            finish()
    except BackupCryptoError as exc:
        raise BackupError(str(exc)) from exc
    except (EOFError, OSError) as exc:
        raise BackupError(f"the archive cannot be read ({exc})") from exc
    if manifest is None:
        raise BackupError(
            "the archive has no manifest: it is incomplete (its writer did not finish) or not "
            "a backup"
        )
    _check_against_manifest(manifest, members, extract_to)
    return manifest


def verify_backup(path: Path, key: bytes | None) -> Manifest:
    """Read and check the whole backup without touching any database."""
    return read_archive(path, key)


def _parse_manifest(data: bytes) -> Manifest:
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise BackupError(f"the manifest is not valid: {exc.errors()[0]['msg']}") from exc
    if manifest.format != FORMAT or manifest.format_version != FORMAT_VERSION:
        raise BackupError(
            f"not a backup this version reads ({manifest.format} {manifest.format_version})"
        )
    return manifest


def _check_against_manifest(
    manifest: Manifest, members: dict[str, _Member], extracted: Path | None
) -> None:
    listed, present = set(manifest.files), set(members)
    if listed - present:
        raise BackupError(f"files missing from the archive: {', '.join(sorted(listed - present))}")
    if present - listed:
        raise BackupError(f"files not in the manifest: {', '.join(sorted(present - listed))}")
    for name, entry in manifest.files.items():
        got = members[name]
        if got.sha256 != entry.sha256 or got.size != entry.size:
            raise BackupError(f"{name} does not match its SHA-256 in the manifest (damaged)")
    for name, coll in manifest.collections.items():
        base = f"dump/{manifest.database}/{name}"
        if coll.bson != f"{base}.bson.gz" or coll.metadata != f"{base}.metadata.json.gz":
            raise BackupError(f"the manifest's files for collection {name!r} are misnamed")
        for path in (coll.bson, coll.metadata):
            if path not in members:
                raise BackupError(f"{path} is missing")
        if members[coll.bson].count != coll.count:
            raise BackupError(
                f"collection {name}: {members[coll.bson].count} documents, the manifest says "
                f"{coll.count}"
            )
        if extracted is not None:
            meta = _read_metadata(extracted / coll.metadata)
            if meta.get("collectionName") != name:
                raise BackupError(f"{coll.metadata} describes another collection")
    stray = {
        n for n, m in members.items() if m.count is not None or n.endswith(".metadata.json.gz")
    } - {p for c in manifest.collections.values() for p in (c.bson, c.metadata)}
    if stray:
        raise BackupError(f"collection files the manifest does not describe: {sorted(stray)}")
    for art in manifest.artifacts:
        for file_name in art.files:
            if f"artifacts/{art.model}/{art.version}/{file_name}" not in members:
                raise BackupError(f"artifact file {art.model}/{art.version}/{file_name} is missing")


def _read_metadata(path: Path) -> Document:
    try:
        doc = json_util.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError) as exc:
        raise BackupError(f"{path.name} is not valid metadata ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("indexes", []), list):
        raise BackupError(f"{path.name} is not valid metadata")
    return doc


# --- restore --------------------------------------------------------------------------------


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
    """Insert in batches, parsing the next batch in a thread while this one is written. A
    document some process inserted meanwhile (a serving process seeding `model_versions`) is
    replaced by the backup's."""
    batches = _raw_batches(path)
    coll = db[name]
    inserted = 0

    def take() -> list[RawBSONDocument] | None:
        return next(batches, None)

    upcoming = asyncio.ensure_future(asyncio.to_thread(take))
    try:
        while (batch := await upcoming) is not None:
            upcoming = asyncio.ensure_future(asyncio.to_thread(take))
            try:
                await coll.insert_many(batch, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != 11000 for e in errors):
                    raise
                for error in errors:
                    doc = batch[int(error["index"])]
                    await coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
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


async def _user_collections(db: AsyncDatabase[Document]) -> list[str]:
    return sorted(n for n in await db.list_collection_names() if not n.startswith("system."))


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
    """Restore `path` into `db`: verified in full first (nothing changes on a bad backup),
    then artifacts, then every collection (documents as raw BSON, then indexes), and last the
    data version, raised above both the restored one and the one `db` had, so that every
    running service rebuilds what it derived from the data."""
    say = say or (lambda _msg: None)
    with tempfile.TemporaryDirectory(prefix="tmdb-restore-", dir=work_dir) as work_name:
        work = Path(work_name)
        say(f"verifying {path.name}")
        manifest = await asyncio.to_thread(read_archive, path, key, work)
        metadata_docs = {
            name: _read_metadata(work / coll.metadata)
            for name, coll in manifest.collections.items()
        }
        write, present = _plan_artifacts(manifest, artifacts_dir)
        existing = await _user_collections(db)
        non_empty = [n for n in existing if await db[n].find_one({}, {"_id": 1}) is not None]
        if non_empty and not drop:
            raise BackupError(
                f"database {db.name!r} is not empty (collections {', '.join(non_empty)}); "
                "restore into a new database with --db NAME, or replace its contents with --drop"
            )
        say("backup verified; restoring")
        _write_artifacts(manifest, artifacts_dir, work, write)
        try:
            floor = await meta_repo.get_data_version(db)
        except (PyMongoError, ValueError, TypeError, KeyError):
            floor = 0
        # --drop replaces everything; otherwise only empty collections (e.g. made by a service
        # start, with its indexes) are dropped so that they come back exactly as backed up.
        dropped = existing if drop else [n for n in existing if n in manifest.collections]
        for name in dropped:
            await db.drop_collection(name)
        order = sorted(manifest.collections, key=lambda n: (n == RESTORE_LAST, n))
        restored: dict[str, int] = {}
        for name in order:
            options = metadata_docs[name].get("options") or {}
            with contextlib.suppress(CollectionInvalid):  # made meanwhile by a running service
                await db.create_collection(name, **options)
            restored[name] = await _insert_all(db, name, work / manifest.collections[name].bson)
            await _create_indexes(db, name, list(metadata_docs[name].get("indexes", [])))
            say(f"  {name}: {restored[name]} documents")
        version = await meta_repo.bump_data_version_past(db, floor)
    return RestoreReport(
        database=db.name,
        collections=restored,
        artifacts_written=write,
        artifacts_present=present,
        data_version=version,
        dropped=dropped if drop else [],
    )
