"""Helpers of the backup tests: a database filled the way the service fills it (films of every
BSON type the service stores, users, keys, model versions, ingest runs, meta, and a collection
no code names yet), its content fingerprint, the command line, and an archive rewritten with a
member changed (manifest kept consistent, to get past the checksums)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import shutil
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from bson import Int64, ObjectId, Regex
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner, Result

from app.cli import app as cli_app
from app.db import INGEST_RUNS, Document
from app.services import credentials, meta_repo, model_versions
from app.services.backup.archive import MANIFEST, Manifest, is_backed_up
from app.services.credentials import Role
from app.services.indexes import ensure_indexes
from app.services.movies_repo import MOVIES
from app.settings import get_settings
from tests.support import REPO_ROOT

FIXTURE_ARTIFACTS = REPO_ROOT / "tests" / "fixtures" / "artifacts-pre-rename"
REVENUE_VERSION = "20261126T164321Z"
# A collection that no module names: a backup finds it by listing, as it will find the
# collections later issues add (prediction logs, audit, ...).
UNNAMED = "prediction_log"
WORDS = [
    "night",
    "city",
    "love",
    "war",
    "star",
    "dark",
    "blue",
    "lost",
    "iron",
    "ghost",
    "king",
    "river",
    "storm",
]


def film(i: int, rng: random.Random, blob: int = 0) -> Document:
    """A film as stored, with every BSON type the service writes (and a few more)."""
    released = datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(25_000))
    budget = rng.choice([None, rng.randrange(10**5, 3 * 10**8)])
    title = " ".join(rng.choice(WORDS).title() for _ in range(3)) + f" {i}"
    doc: Document = {
        "_id": f"tmdb:{i}",
        "id": i,
        "title": title,
        "title_normalized": title.lower(),
        "release_date": released.date().isoformat(),
        "release_year": released.year,
        "budget": budget,
        "revenue": Int64(rng.randrange(10**9, 3 * 10**9)) if i % 7 == 0 else None,
        "runtime": float(rng.randrange(70, 200)),
        "vote_average": round(rng.random() * 10, 1),
        "adult": i % 11 == 0,
        "genres": rng.sample(["Action", "Drama", "Comedy", "Horror", "Animation"], k=2),
        "cast": [{"name": f"Actor {rng.randrange(500)}", "order": k} for k in range(4)],
        "crew": [{"name": f"Director {i % 97}", "job": "Director"}],
        "imdb": {"score": 7.5, "votes": Int64(123_456_789_012)} if i % 3 else None,
        "overview": " ".join(rng.choice(WORDS) for _ in range(20)),
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=i),
        "source_oid": ObjectId(f"{i:024x}"),
        "poster": Binary(bytes(rng.randrange(256) for _ in range(16))),
        "pattern": Regex("^star", "i"),
        "unicode": "Amélie, 千と千尋 🎬",
        "empty": {},
    }
    if blob:  # incompressible bytes, for backups of a known size
        doc["still"] = Binary(rng.randbytes(blob))
    return doc


async def fill(
    db: AsyncDatabase[Document], films: int = 300, seed: int = 7, blob: int = 0, log: int = 25
) -> None:
    """`films` films (with `blob` random bytes each), `log` documents in a collection no code
    names, and one of everything else the service keeps."""
    rng = random.Random(seed)
    await ensure_indexes(db)
    batch = [film(i, rng, blob) for i in range(1, films + 1)]
    for start in range(0, len(batch), 1000):
        await db[MOVIES].insert_many(batch[start : start + 1000])
    await credentials.create_user(db, "alice", Role.admin, "correct horse battery")
    await credentials.create_api_key(db, "partner", Role.predictor)
    await model_versions.seed(db, "revenue", REVENUE_VERSION, "test")
    await db[INGEST_RUNS].insert_one({"_id": "run-1", "kind": "daily", "pages": 3})
    for start in range(0, log, 1000):
        await db[UNNAMED].insert_many(
            [{"film": f"tmdb:{i}", "y": i * 1.5} for i in range(start, min(log, start + 1000))]
        )
    await db[UNNAMED].create_indexes(
        [
            IndexModel([("film", ASCENDING), ("y", DESCENDING)], name="film_y"),
            IndexModel([("y", ASCENDING)], name="y_unique", unique=True),
        ]
    )
    await meta_repo.bump_data_version(db)


def copy_fixture_artifacts(target: Path) -> Path:
    shutil.copytree(FIXTURE_ARTIFACTS, target)
    return target


async def fingerprint(db: AsyncDatabase[Document]) -> dict[str, tuple[int, str, str]]:
    """Per backed-up collection: its document count, the SHA-256 of its documents' exact BSON
    bytes (sorted, so the order they are stored in does not count), and its indexes."""
    raw = CodecOptions(document_class=RawBSONDocument)
    found: dict[str, tuple[int, str, str]] = {}
    for name in sorted(await db.list_collection_names()):
        if not is_backed_up(name):
            continue
        coll = db.client.get_database(db.name, codec_options=raw)[name]
        docs = sorted([bytes(cast(RawBSONDocument, doc).raw) async for doc in coll.find({})])
        indexes = sorted(
            [
                json.dumps({k: v for k, v in ix.items() if k not in ("ns", "v")}, default=str)
                async for ix in await db[name].list_indexes()
            ]
        )
        found[name] = (len(docs), hashlib.sha256(b"".join(docs)).hexdigest(), "\n".join(indexes))
    return found


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> SHA-256)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cli_env(uri: str, db_name: str, artifacts: Path, **extra: str) -> dict[str, str]:
    """The service variables a backup command reads (BACKUP_KEY only when given)."""
    return {
        "MONGODB_URI": uri,
        "MONGODB_DB": db_name,
        "ARTIFACTS_DIR": str(artifacts),
        "APP_ENV": "test",
        **extra,
    }


def cli_command(*args: str) -> list[str]:
    """`tmdb-analytics backup ARGS` as a process of its own."""
    return [sys.executable, "-m", "app.cli", "backup", *args]


async def cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> Result:
    """`tmdb-analytics backup ARGS` in process with exactly `env`'s service variables (in a
    thread: the command runs its own event loop). Separate stdout and stderr, as a shell sees
    them."""
    for name in ("BACKUP_KEY", "MONGODB_URI", "MONGODB_DB", "ARTIFACTS_DIR", "APP_ENV"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, cli_app, ["backup", *args])
    finally:
        get_settings.cache_clear()


def no_crash(result: Result) -> None:
    """The command ended by its own decision (an exit code), not by an uncaught exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output


def rewrite_member(source: Path, target: Path, member: str, data: bytes, count: int) -> None:
    """Copy the unencrypted archive `source` to `target` with `member` replaced by `data` (a
    collection's `.bson.gz` holding `count` documents), its manifest updated to match: an
    archive every checksum accepts, with other contents."""
    with tarfile.open(source) as tar:
        members = {}
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            assert handle is not None
            members[info.name] = handle.read()
    manifest = Manifest.model_validate_json(members.pop(MANIFEST))
    members[member] = data
    manifest.files[member].sha256 = hashlib.sha256(data).hexdigest()
    manifest.files[member].size = len(data)
    for entry in manifest.collections.values():
        if entry.bson == member:
            entry.count = count
    members[MANIFEST] = manifest.model_dump_json().encode()
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as out:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            out.addfile(info, io.BytesIO(body))


def load_manifest(path: Path) -> dict[str, Any]:
    with tarfile.open(path) as tar:
        handle = tar.extractfile(MANIFEST)
        assert handle is not None
        loaded: dict[str, Any] = json.loads(handle.read())
        return loaded
