"""What a backup file is: its format and manifest, its name, how the backups in a directory
are listed and pruned, and how one is read and checked in full (`read_archive`).

A backup is one tar file (`tmdb-backup-<db>-<UTC stamp>.tar`, or `.tar.enc` encrypted with
`app.services.backup.crypto`) holding, in the layout of `mongodump --gzip`:

    dump/<db>/<collection>.bson.gz            the documents, concatenated BSON, gzipped
    dump/<db>/<collection>.metadata.json.gz   {"indexes": [...], "uuid", "collectionName", ...}
    artifacts/<model>/<version>/<file>        the active model versions
    manifest.json                             last: what the archive holds, with SHA-256s

Only a complete archive carries a name `NAME_RE` matches, and only a complete one has a
manifest (and, encrypted, a final chunk): what a writer killed mid-way leaves is refused.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

from bson import json_util
from pydantic import BaseModel, ValidationError

from app.db import Document
from app.ml import artifacts
from app.services.backup.crypto import BackupCryptoError, DecryptingReader, is_encrypted

FORMAT = "tmdb-analytics-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PREFIX = "tmdb-backup-"
NAME_RE = re.compile(
    r"^tmdb-backup-(?P<db>[A-Za-z0-9_-]+)-(?P<stamp>[0-9]{8}T[0-9]{12}Z)\.tar(?P<enc>\.enc)?$"
)
# The hidden directory a backup is written in until it is complete.
PARTIAL_RE = re.compile(r"^\.tmdb-backup-.*\.partial$")
# Where a restore loads collections (`NEW`) and puts the replaced ones aside (`OLD`) until the
# swap is done, and its done marker: never backed up themselves. No dots: FerretDB v1 refuses
# a rename to a name with a dot.
RESTORE_PREFIX = "_restore_"
STAGING_NEW = RESTORE_PREFIX + "new_"
STAGING_OLD = RESTORE_PREFIX + "old_"
DONE_MARKER = RESTORE_PREFIX + "done"
STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
COPY_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 64 << 20
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


def is_backed_up(collection: str) -> bool:
    """Every collection but the server's own (`system.*`) and a restore's staging copies."""
    return not collection.startswith(("system.", RESTORE_PREFIX))


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
    if any(PARTIAL_RE.match(part) for part in path.parts):
        raise BackupError(
            f"{path} is inside the temporary directory of a backup that is not finished (or "
            "never will be); it is not a backup"
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
            meta = read_metadata(extracted / coll.metadata)
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


def read_metadata(path: Path) -> Document:
    try:
        doc = json_util.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError) as exc:
        raise BackupError(f"{path.name} is not valid metadata ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("indexes", []), list):
        raise BackupError(f"{path.name} is not valid metadata")
    return doc
