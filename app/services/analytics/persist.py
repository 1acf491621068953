"""The snapshot on disk: one file per catalogue beside the local data, memory-mapped at start
so that a restart does not read the catalogue again.

Layout (little-endian): `TMDBSNAP`, the header's length (u64) and CRC-32 (u32, then 4 spare
bytes), the header (JSON: format, the catalogue id, data version, hash epoch and change-log
mark the snapshot stands at, every array's dtype, length and offset, and the CRC-32 of all
the bytes after the header, padding included), then the arrays, each 64-byte aligned.
Numbers are mapped in place (read-only, shared by every worker through the page cache);
strings are stored as UTF-8, NUL-joined when none holds a NUL (else with offsets), and
decoded at load.

Trust: a file whose magic, format, catalogue, size or checksums do not match is not used (the
caller reads the catalogue instead), never partly. Writers write a temporary file beside the
target, fsync it and rename it over the target (atomic on POSIX), so a reader opens either
the old file or the new one, whole; a reader that mapped the old one keeps it until it drops
the arrays. One writer at a time (`fcntl.flock` on a lock file, not waited for: the other
workers hold the same snapshot, so one copy on disk is enough).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import mmap
import os
import struct
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.services.analytics.snapshot import (
    NUMERIC_FIELDS,
    Lineage,
    MultiDim,
    SingleDim,
    Snapshot,
    assemble,
)
from app.services.analytics.titles import TitleIndex

log = logging.getLogger("app.analytics")

MAGIC = b"TMDBSNAP"
# Bump when the layout or the meaning of any array changes (projection, canonical order,
# title index, the dimensions stored): files of another format are rebuilt, never read.
# Format 3 added the keyword dimension (similar films and segments).
FORMAT_VERSION = 3
ALIGN = 64
PREAMBLE = struct.Struct("<8sQII")  # magic, header length, header CRC-32, spare
DIMS = ("genre", "company", "director", "actor", "keyword")
# Temporary files left by a writer that was killed are removed after this long.
STALE_TEMP_SECONDS = 3600.0


class SnapshotFileError(Exception):
    """The file cannot be trusted (damaged, truncated, or of another format)."""


@dataclass(frozen=True, slots=True)
class FileKey:
    """What a snapshot file claims to hold, from its header alone."""

    catalogue: str
    version: int
    hash_epoch: int
    changes_seq: int


# --- encoding -------------------------------------------------------------------------------


def _strings(name: str, values: Sequence[str | None], out: dict[str, npt.NDArray[Any]]) -> Any:
    """Store a list of strings (None allowed) as arrays in `out`; returns its description."""
    nullable = any(v is None for v in values)
    texts = ["" if v is None else v for v in values]
    joined = not any("\x00" in t for t in texts)
    if nullable:
        out[f"{name}.null"] = np.fromiter((v is None for v in values), dtype=np.uint8)
    if joined:
        out[f"{name}.utf8"] = np.frombuffer("\x00".join(texts).encode(), dtype=np.uint8)
    else:
        encoded = [t.encode() for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64), out=offsets[1:])
        out[f"{name}.utf8"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        out[f"{name}.offsets"] = offsets
    return {"count": len(values), "joined": joined, "nullable": nullable}


def _decode(name: str, info: Any, arrays: dict[str, npt.NDArray[Any]]) -> list[Any]:
    count = int(info["count"])
    blob = arrays[f"{name}.utf8"].tobytes()
    if count == 0:
        return []
    if info["joined"]:
        texts: list[Any] = blob.decode().split("\x00")
    else:
        bounds = arrays[f"{name}.offsets"].tolist()
        texts = [blob[a:b].decode() for a, b in itertools.pairwise(bounds)]
    if len(texts) != count:
        raise SnapshotFileError(f"{name}: {len(texts)} strings, the header says {count}")
    if info["nullable"]:
        for i in np.flatnonzero(arrays[f"{name}.null"]).tolist():
            texts[i] = None
    return texts


def _arrays(snap: Snapshot) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    arrays: dict[str, npt.NDArray[Any]] = {
        "ids": snap.ids,
        "title_index": snap.title_index.postings,
    }
    strings: dict[str, Any] = {}
    for f in NUMERIC_FIELDS:
        arrays[f"num.{f}"] = snap.num[f]
        arrays[f"order.{f}"] = snap.order[f]
    arrays["language.codes"] = snap.language.codes
    strings["language.labels"] = _strings("language.labels", snap.language.labels, arrays)
    for name in DIMS:
        dim: MultiDim = getattr(snap, name)
        arrays[f"{name}.indptr"] = dim.indptr
        arrays[f"{name}.codes"] = dim.codes
        strings[f"{name}.labels"] = _strings(f"{name}.labels", dim.labels, arrays)
    for name in ("titles", "titles_normalized", "release_dates"):
        strings[name] = _strings(name, getattr(snap, name), arrays)
    return arrays, strings


def _bytes(array: npt.NDArray[Any]) -> memoryview:
    """The bytes of a contiguous array, without a copy."""
    return array.data.cast("B")


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def write_snapshot(snap: Snapshot, path: Path) -> int:
    """Write `snap` to `path` atomically (temporary file, fsync, rename); returns its size."""
    arrays, strings = _arrays(snap)
    table: dict[str, list[Any]] = {}
    offset = end = crc = 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array)
        arrays[name] = data
        crc = zlib.crc32(bytes(offset - end), crc)  # the padding before it
        crc = zlib.crc32(_bytes(data), crc)
        table[name] = [data.dtype.str, int(data.size), offset]
        end = offset + data.nbytes
        offset = _aligned(end)
    lineage = snap.lineage
    header = json.dumps(
        {
            "format": FORMAT_VERSION,
            "catalogue": lineage.catalogue,
            "version": snap.version,
            "hash_epoch": lineage.hash_epoch,
            "changes_seq": lineage.changes_seq,
            "unsettled": lineage.unsettled,
            "built_at": snap.built_at,
            "films": snap.size,
            "data_size": end,
            "data_crc": crc,
            "arrays": table,
            "strings": strings,
        }
    ).encode()
    start = _aligned(PREAMBLE.size + len(header))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as out:
            out.write(PREAMBLE.pack(MAGIC, len(header), zlib.crc32(header), 0))
            out.write(header)
            for name, array in arrays.items():
                out.seek(start + table[name][2])
                out.write(_bytes(array))
            out.truncate(start + end)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return start + end


# --- decoding -------------------------------------------------------------------------------


def _header(buf: mmap.mmap | bytes) -> tuple[dict[str, Any], int]:
    if len(buf) < PREAMBLE.size:
        raise SnapshotFileError("shorter than its preamble")
    magic, length, crc, _ = PREAMBLE.unpack_from(buf, 0)
    if magic != MAGIC:
        raise SnapshotFileError("not a snapshot file")
    raw = bytes(buf[PREAMBLE.size : PREAMBLE.size + length])
    if len(raw) != length or zlib.crc32(raw) != crc:
        raise SnapshotFileError("header damaged")
    try:
        header: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise SnapshotFileError("header unreadable") from exc
    if header.get("format") != FORMAT_VERSION:
        raise SnapshotFileError(f"format {header.get('format')}, this build reads {FORMAT_VERSION}")
    return header, _aligned(PREAMBLE.size + length)


def read_key(path: Path) -> FileKey | None:
    """What the file at `path` claims to hold (None: absent or unreadable), header only."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 20)
        header, _ = _header(head)
    except (OSError, SnapshotFileError):
        return None
    return FileKey(
        header["catalogue"], header["version"], header["hash_epoch"], header["changes_seq"]
    )


def read_snapshot(path: Path, catalogue: str, build_id: int) -> Snapshot:
    """The snapshot in `path`, every checksum verified, numbers mapped in place.

    Raises FileNotFoundError when there is none, SnapshotFileError when it cannot be trusted
    or belongs to another catalogue."""
    started = time.perf_counter()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise SnapshotFileError("empty file")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    header, start = _header(buf)
    if header["catalogue"] != catalogue:
        raise SnapshotFileError("a snapshot of another catalogue")
    if start + int(header["data_size"]) != size:
        raise SnapshotFileError(f"{size} bytes, the header says {start + header['data_size']}")
    with memoryview(buf) as view:  # every byte after the header, in one pass
        if zlib.crc32(view[start:]) != header["data_crc"]:
            raise SnapshotFileError("checksum mismatch")
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, (dtype, count, offset) in header["arrays"].items():
        dt = np.dtype(dtype)
        if start + offset + count * dt.itemsize > size:
            raise SnapshotFileError(f"{name}: out of the file")
        arrays[name] = np.frombuffer(buf, dtype=dt, count=count, offset=start + offset)
    try:
        return _snapshot(header, arrays, build_id, started)
    except (KeyError, ValueError, IndexError) as exc:
        raise SnapshotFileError(f"inconsistent arrays: {exc!r}") from exc


def _snapshot(
    header: dict[str, Any], arrays: dict[str, npt.NDArray[Any]], build_id: int, started: float
) -> Snapshot:
    strings = header["strings"]
    texts = {name: _decode(name, info, arrays) for name, info in strings.items()}
    n = int(header["films"])
    ids = arrays["ids"]
    if ids.size != n or any(len(texts[k]) != n for k in ("titles", "titles_normalized")):
        raise SnapshotFileError("columns of different lengths")

    def dim(name: str) -> MultiDim:
        indptr = arrays[f"{name}.indptr"]
        lens = np.diff(indptr)
        if indptr.size != n + 1 or int(indptr[-1]) != arrays[f"{name}.codes"].size:
            raise SnapshotFileError(f"{name}: bad row pointers")
        return MultiDim(
            indptr=indptr,
            codes=arrays[f"{name}.codes"],
            rows=np.repeat(np.arange(n, dtype=np.int32), lens),
            labels=texts[f"{name}.labels"],
        )

    return assemble(
        version=int(header["version"]),
        build_id=build_id,
        started=started,
        ids=ids,
        titles=texts["titles"],
        titles_normalized=texts["titles_normalized"],
        release_dates=texts["release_dates"],
        num={f: arrays[f"num.{f}"] for f in NUMERIC_FIELDS},
        order={f: arrays[f"order.{f}"] for f in NUMERIC_FIELDS},
        language=SingleDim(codes=arrays["language.codes"], labels=texts["language.labels"]),
        genre=dim("genre"),
        company=dim("company"),
        director=dim("director"),
        actor=dim("actor"),
        keyword=dim("keyword"),
        title_index=TitleIndex(arrays["title_index"]),
        lineage=Lineage(
            catalogue=str(header["catalogue"]),
            hash_epoch=int(header["hash_epoch"]),
            changes_seq=int(header["changes_seq"]),
            unsettled=bool(header["unsettled"]),
            source="persisted",
        ),
    )


# --- the store ------------------------------------------------------------------------------


class SnapshotStore:
    """Snapshot files of one database (`name`) in `directory`, one per catalogue id."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name

    def path(self, catalogue: str) -> Path:
        return self.directory / f"{self.name}.{catalogue}.snapshot"

    def load(self, catalogue: str, build_id: int) -> Snapshot | None:
        """The persisted snapshot of `catalogue`, None when there is none or it cannot be
        trusted (logged; the caller reads the catalogue and the next save replaces it)."""
        path = self.path(catalogue)
        try:
            return read_snapshot(path, catalogue, build_id)
        except FileNotFoundError:
            return None
        except (OSError, SnapshotFileError) as exc:
            log.warning("persisted snapshot %s not used: %s", path, exc)
            return None

    def save(self, snap: Snapshot) -> bool:
        """Persist `snap` unless another process is writing or the file on disk is as new;
        returns whether it was written."""
        if not snap.lineage.catalogue:
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(snap.lineage.catalogue)
        with open(self.directory / f".{self.name}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return False  # another worker is writing the same catalogue
                raise
            on_disk = read_key(path)
            if on_disk is not None and (on_disk.version, on_disk.changes_seq) >= (
                snap.version,
                snap.lineage.changes_seq,
            ):
                return False
            started = time.perf_counter()
            size = write_snapshot(snap, path)
            self._clean(keep=path)
        log.info(
            "snapshot v%s persisted: %d films, %.0f MB in %.2fs",
            snap.version,
            snap.size,
            size / 1e6,
            time.perf_counter() - started,
        )
        return True

    def _clean(self, keep: Path) -> None:
        """Remove this database's files of other catalogues (a dropped database) and the
        temporary files of killed writers."""
        now = time.time()
        for other in self.directory.glob(f"{self.name}.*.snapshot"):
            if other != keep:
                with contextlib.suppress(OSError):
                    other.unlink()
        for tmp in self.directory.glob(f".{self.name}.*.snapshot.tmp-*"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                    tmp.unlink()
