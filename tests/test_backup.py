"""`tmdb-analytics backup create|verify|restore|list` against the real local database: a round
trip gives the same documents (byte for byte), indexes and model artifacts; an encrypted backup
needs its key; damaged, tampered, wrong-key and unfinished backups are refused and change
nothing; `--keep` prunes; the layout is mongodump's; a running service follows a restore."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import bson
import httpx
import pytest
from bson import json_util
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError
from typer.testing import Result

from app.db import Document
from app.services import meta_repo
from app.services.analytics import SnapshotStore, load_snapshot
from app.services.analytics.refresh import Refresher
from app.services.backup import (
    BackupError,
    create_backup,
    list_backups,
    prune_backups,
    recover_interrupted,
    restore_backup,
    verify_backup,
)
from app.services.backup.archive import DONE_MARKER, STAGING_NEW, STAGING_OLD
from app.services.movies_repo import MOVIES
from app.services.movies_store import upsert_movies
from tests import analytics_support
from tests.backup_support import (
    REVENUE_VERSION,
    UNNAMED,
    cli,
    cli_command,
    cli_env,
    copy_fixture_artifacts,
    fill,
    fingerprint,
    load_manifest,
    no_crash,
    rewrite_member,
    tree_hashes,
)
from tests.snapshot_support import assert_same_snapshot, random_film

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()


@pytest.fixture
async def filled(db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    await fill(db)
    return db


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return copy_fixture_artifacts(tmp_path / "artifacts")


@pytest.fixture
async def other_db(
    client: AsyncMongoClient[Document], db_name: str
) -> AsyncIterator[AsyncDatabase[Document]]:
    name = f"{db_name}_r"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _audit_only(prints: dict[str, tuple[int, str, str]]) -> dict[str, tuple[int, str, str]]:
    return {k: v for k, v in prints.items() if k == "audit"}


def _without_data_version(
    prints: dict[str, tuple[int, str, str]],
) -> dict[str, tuple[int, str, str]]:
    return {k: v for k, v in prints.items() if k != meta_repo.META}


async def _meta_except_version(db: AsyncDatabase[Document]) -> list[Document]:
    """`meta` but for what a restore renews: the data version and the catalogue's id."""
    renewed = [meta_repo.DATA_VERSION_ID, meta_repo.CATALOGUE]
    return [d async for d in db[meta_repo.META].find({"_id": {"$nin": renewed}})]


async def test_round_trip_through_the_cli_gives_identical_documents_indexes_and_artifacts(
    filled: AsyncDatabase[Document],
    other_db: AsyncDatabase[Document],
    mongodb_uri: str,
    artifacts: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = await fingerprint(filled)
    assert {MOVIES, "users", "api_keys", "model_versions", "ingest_runs", "meta", UNNAMED} <= set(
        before
    )
    out = tmp_path / "backups"
    env = cli_env(mongodb_uri, filled.name, artifacts)
    made = await cli(monkeypatch, env, "create", "--out", str(out))
    assert made.exit_code == 0, made.stderr
    path = Path(_last_line(made.stdout))
    assert path.parent == out
    assert [b.path for b in list_backups(out)] == [path]

    verified = await cli(monkeypatch, env, "verify", str(path))
    assert verified.exit_code == 0, verified.stderr
    assert f"ok: {path}" in verified.stdout and "mongorestore" in verified.stderr
    listed = await cli(monkeypatch, env, "list", str(out))
    assert listed.exit_code == 0
    assert listed.stdout.split("\t")[:2] == [str(path), filled.name]

    restored_artifacts = tmp_path / "restored-artifacts"
    restored = await cli(
        monkeypatch,
        {**env, "ARTIFACTS_DIR": str(restored_artifacts)},
        "restore",
        str(path),
        "--db",
        other_db.name,
    )
    assert restored.exit_code == 0, restored.stderr
    after = await fingerprint(other_db)
    assert _without_data_version(after) == _without_data_version(before)
    assert await _meta_except_version(other_db) == await _meta_except_version(filled)
    # The restored data version moved past the backup's: nothing keyed on it is reused; and
    # the catalogue has an id of its own (no snapshot of other data is caught up over it).
    assert await meta_repo.get_data_version(other_db) > await meta_repo.get_data_version(filled)
    source_catalogue = await filled[meta_repo.META].find_one({"_id": meta_repo.CATALOGUE})
    restored_catalogue = await other_db[meta_repo.META].find_one({"_id": meta_repo.CATALOGUE})
    assert restored_catalogue is not None and restored_catalogue["id"] != (
        source_catalogue or {}
    ).get("id")
    # The active model versions' files came back, byte for byte, with their ACTIVE pointers.
    source_files = tree_hashes(artifacts)
    assert tree_hashes(restored_artifacts) == source_files
    assert f"revenue/{REVENUE_VERSION}/model.joblib" in source_files
    # And the source database was only read, but for the audit log, which records both.
    assert await fingerprint(filled) == {**before, **_audit_only(await fingerprint(filled))}
    entries = [e async for e in filled["audit"].find({"action": {"$regex": "^backup[.]"}})]
    assert sorted((e["action"], e["target"], e["outcome"]) for e in entries) == [
        ("backup.create", filled.name, "success"),
        ("backup.restore", other_db.name, "success"),
    ]
    assert all(e["actor"].startswith("cli:") for e in entries)
    assert {e["details"]["path"] for e in entries} == {str(path)}


async def test_restore_refuses_a_non_empty_database_and_drop_replaces_everything(
    filled: AsyncDatabase[Document],
    other_db: AsyncDatabase[Document],
    artifacts: Path,
    tmp_path: Path,
) -> None:
    path, _ = await create_backup(filled, artifacts_dir=artifacts, out_dir=tmp_path / "b")
    await fill(other_db, films=40, seed=99)
    await other_db["only_here"].insert_one({"_id": 1})
    target_before = await fingerprint(other_db)
    version_before = await meta_repo.get_data_version(other_db)

    with pytest.raises(BackupError, match=r"not empty.*--drop"):
        await restore_backup(other_db, path, key=None, artifacts_dir=artifacts)
    assert await fingerprint(other_db) == target_before

    report = await restore_backup(other_db, path, key=None, artifacts_dir=artifacts, drop=True)
    assert report.replaced and set(report.artifacts_present) == {
        f"revenue/{REVENUE_VERSION}",
        "hit/20261126T164325Z",
    }
    after = await fingerprint(other_db)
    assert "only_here" not in after  # --drop: the database ends as the backup was
    assert _without_data_version(after) == _without_data_version(await fingerprint(filled))
    assert report.data_version > version_before
    assert not [n for n in await other_db.list_collection_names() if n.startswith("_restore_")]


async def test_encrypted_backup_needs_its_key_and_a_flipped_byte_is_refused(
    filled: AsyncDatabase[Document],
    other_db: AsyncDatabase[Document],
    mongodb_uri: str,
    artifacts: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = cli_env(mongodb_uri, filled.name, artifacts, BACKUP_KEY=KEY)
    made = await cli(monkeypatch, env, "create", "--out", str(tmp_path / "b"), "--encrypt")
    assert made.exit_code == 0, made.stderr
    path = Path(_last_line(made.stdout))
    assert path.name.endswith(".tar.enc")
    raw = await asyncio.to_thread(path.read_bytes)
    assert b"tmdb:1" not in raw and b"dump/" not in raw  # nothing readable without the key
    assert (await cli(monkeypatch, env, "verify", str(path))).exit_code == 0

    # The target already holds data and artifacts: a refused restore must change neither.
    await fill(other_db, films=30, seed=5)
    target = await fingerprint(other_db)
    target_artifacts = tmp_path / "target-artifacts"
    target_files = tree_hashes(target_artifacts)
    into_target = {**env, "ARTIFACTS_DIR": str(target_artifacts)}

    def refused(result: Result, reason: str) -> None:
        assert result.exit_code != 0, result.stdout
        assert re.search(reason, result.stderr), result.stderr
        no_crash(result)

    wrong = {**into_target, "BACKUP_KEY": OTHER_KEY}
    refused(await cli(monkeypatch, wrong, "verify", str(path)), "wrong key")
    refused(
        await cli(monkeypatch, wrong, "restore", str(path), "--db", other_db.name, "--drop"),
        "restore refused: wrong key",
    )
    no_key = {k: v for k, v in into_target.items() if k != "BACKUP_KEY"}
    refused(await cli(monkeypatch, no_key, "verify", str(path)), "encrypted: set BACKUP_KEY")
    bad_key = {**into_target, "BACKUP_KEY": "c2hvcnQ="}
    refused(await cli(monkeypatch, bad_key, "verify", str(path)), "exactly 32 bytes")

    # One flipped byte: in the first chunk, in the middle, in the last tag byte.
    for offset in (200, len(raw) // 2, len(raw) - 1):
        damaged = path.with_name(path.name.replace("Z.tar", "1Z.tar"))
        flipped = bytearray(raw)
        flipped[offset] ^= 0x01
        await asyncio.to_thread(damaged.write_bytes, bytes(flipped))
        refused(await cli(monkeypatch, into_target, "verify", str(damaged)), "tampered|damaged")
        refused(
            await cli(
                monkeypatch, into_target, "restore", str(damaged), "--db", other_db.name, "--drop"
            ),
            "restore refused: .*(tampered|damaged)",
        )
    # Cut short (a copy that stopped) or with bytes appended.
    for body in (raw[: len(raw) - 40], raw + b"\0"):
        await asyncio.to_thread(damaged.write_bytes, body)
        refused(
            await cli(monkeypatch, into_target, "verify", str(damaged)), "truncated|after its final"
        )
    assert await fingerprint(other_db) == target
    assert tree_hashes(target_artifacts) == target_files

    # The right key restores it.
    restored = await cli(
        monkeypatch, into_target, "restore", str(path), "--db", other_db.name, "--drop"
    )
    assert restored.exit_code == 0, restored.stderr
    # The backup was made before the audit log recorded anything of it.
    source = {k: v for k, v in (await fingerprint(filled)).items() if k != "audit"}
    assert _without_data_version(await fingerprint(other_db)) == _without_data_version(source)
    # Every refused restore is in the audit log, with its reason and never the key.
    refusals = [
        e async for e in filled["audit"].find({"action": "backup.restore", "outcome": "failure"})
    ]
    assert len(refusals) == 4 and all(e["target"] == other_db.name for e in refusals)
    assert all(e["details"]["outcome"] == "refused" for e in refusals)
    assert KEY not in str(refusals) and OTHER_KEY not in str(refusals)


def _member_offset(path: Path, member: str) -> int:
    with tarfile.open(path) as tar:
        return int(tar.getmember(member).offset_data)


async def test_damaged_unencrypted_backups_are_refused_and_change_nothing(
    filled: AsyncDatabase[Document],
    other_db: AsyncDatabase[Document],
    artifacts: Path,
    tmp_path: Path,
) -> None:
    path, manifest = await create_backup(filled, artifacts_dir=artifacts, out_dir=tmp_path / "b")
    raw = await asyncio.to_thread(path.read_bytes)
    films = manifest.collections[MOVIES].bson
    await fill(other_db, films=20, seed=3)
    target = await fingerprint(other_db)
    damaged = tmp_path / "b" / path.name.replace("Z.tar", "9Z.tar")

    async def refuse(body: bytes, reason: str) -> None:
        await asyncio.to_thread(damaged.write_bytes, body)
        with pytest.raises(BackupError, match=reason):
            verify_backup(damaged, None)
        with pytest.raises(BackupError, match=reason):
            await restore_backup(other_db, damaged, key=None, artifacts_dir=artifacts, drop=True)

    flipped = bytearray(raw)
    flipped[_member_offset(path, films) + 100] ^= 0x10
    await refuse(bytes(flipped), "SHA-256|gzip")
    flipped = bytearray(raw)
    flipped[_member_offset(path, "manifest.json") + 30] ^= 0x01
    await refuse(bytes(flipped), "manifest|SHA-256|not a backup")
    # Cut short anywhere up to the manifest's end (past it only the tar's zero padding is lost).
    manifest_at = _member_offset(path, "manifest.json")
    for cut in (len(raw) // 3, manifest_at - 512, manifest_at + 5):
        await refuse(raw[:cut], "manifest|cut short|damaged")

    # Checksums that agree with contents that do not: a document count off by one.
    with tarfile.open(path) as tar:
        handle = tar.extractfile(films)
        assert handle is not None
        docs = gzip.decompress(handle.read())
    fewer = bson.decode_all(docs)[:-1]
    rewrite_member(path, damaged, films, gzip.compress(b"".join(map(bson.encode, fewer))), 1)
    with pytest.raises(BackupError, match="documents, the manifest says 1"):
        verify_backup(damaged, None)
    assert await fingerprint(other_db) == target


async def test_a_restore_that_fails_while_loading_leaves_the_database_as_it_was(
    filled: AsyncDatabase[Document],
    other_db: AsyncDatabase[Document],
    artifacts: Path,
    tmp_path: Path,
) -> None:
    path, manifest = await create_backup(filled, artifacts_dir=artifacts, out_dir=tmp_path / "b")
    films = manifest.collections[MOVIES].bson
    with tarfile.open(path) as tar:
        handle = tar.extractfile(films)
        assert handle is not None
        docs = bson.decode_all(gzip.decompress(handle.read()))
    # A well-formed backup the database refuses half-way: the last film repeats an _id.
    clash = [*docs, {**docs[0], "title": "clash"}]
    bad = tmp_path / "b" / path.name.replace("Z.tar", "7Z.tar")
    rewrite_member(path, bad, films, gzip.compress(b"".join(map(bson.encode, clash))), len(clash))
    verify_backup(bad, None)  # every checksum agrees
    await fill(other_db, films=50, seed=11)
    target = await fingerprint(other_db)

    with pytest.raises(BulkWriteError):
        await restore_backup(other_db, bad, key=None, artifacts_dir=artifacts, drop=True)
    assert await fingerprint(other_db) == target
    assert not [n for n in await other_db.list_collection_names() if n.startswith("_restore_")]


async def test_a_restore_killed_during_the_swap_is_undone_or_finished_by_the_next(
    db: AsyncDatabase[Document],
) -> None:
    # The state a restore killed half-way through its swap leaves: `films` put aside and
    # replaced, `users` put aside only, `other` still staged.
    await db["films"].insert_one({"_id": "old"})
    await db["films"].rename(STAGING_OLD + "films")
    await db["films"].insert_one({"_id": "new"})
    await db["users"].insert_one({"_id": "old-user"})
    await db["users"].rename(STAGING_OLD + "users")
    await db[STAGING_NEW + "users"].insert_one({"_id": "new-user"})
    await db[STAGING_NEW + "other"].insert_one({"_id": 1})
    assert await recover_interrupted(db) == ["films", "users"]
    assert set(await db.list_collection_names()) == {"films", "users"}
    assert await db["films"].find_one() == {"_id": "old"}
    assert await db["users"].find_one() == {"_id": "old-user"}

    # With the done marker the swap had completed: what was put aside goes, the new stays.
    await db["films"].rename(STAGING_OLD + "films")
    await db["films"].insert_one({"_id": "new"})
    await db.create_collection(DONE_MARKER)
    assert await recover_interrupted(db) == []
    assert set(await db.list_collection_names()) == {"films", "users"}
    assert await db["films"].find_one() == {"_id": "new"}


async def test_keep_removes_the_oldest_backups_of_the_same_database(
    filled: AsyncDatabase[Document],
    mongodb_uri: str,
    artifacts: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "b"
    made = [
        (await create_backup(filled, artifacts_dir=artifacts, out_dir=out))[0] for _ in range(3)
    ]
    # Another database's backup in the same directory is not this database's to prune.
    foreign = out / made[0].name.replace(filled.name, "elsewhere")
    shutil.copyfile(made[0], foreign)
    assert prune_backups(out, filled.name, keep=2) == [made[0]]
    assert [b.path for b in list_backups(out)] == [foreign, made[1], made[2]]

    env = cli_env(mongodb_uri, filled.name, artifacts)
    result = await cli(monkeypatch, env, "create", "--out", str(out), "--keep", "1")
    assert result.exit_code == 0, result.stderr
    newest = Path(_last_line(result.stdout))
    assert [b.path for b in list_backups(out)] == [foreign, newest]
    assert "removed old backup" in result.stderr
    refused = await cli(monkeypatch, env, "create", "--out", str(out), "--keep", "0")
    assert refused.exit_code != 0


def _partial_dirs(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.endswith(".partial")] if out.exists() else []


def _kill_when(proc: subprocess.Popen[bytes], out: Path, ready: str, limit: float = 240) -> None:
    """kill -9 `proc` once its partial directory shows `ready`: `dumping` (the first collection
    being compressed to a temporary file) or `archiving` (bytes in the archive, and a later
    collection still being dumped: the archive is surely unfinished)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the backup finished before it could be killed: more data"
        for partial in _partial_dirs(out):
            archive = partial / "archive"
            with contextlib.suppress(FileNotFoundError):
                dumping = any(p.suffix == ".gz" and p.stat().st_size for p in partial.iterdir())
                archived = archive.exists() and archive.stat().st_size > 0
                if dumping and (ready == "dumping" or archived):
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return
        time.sleep(0.002)
    raise AssertionError(f"never saw {ready}")


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _gunzip(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def _start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _nothing_accepted(out: Path, other_db: AsyncDatabase[Document], key: bytes) -> None:
    assert list_backups(out) == []
    leftovers = await asyncio.to_thread(_files_under, out)
    assert leftovers  # the kill did leave files behind: none may pass for a backup
    for path in leftovers:
        with pytest.raises(BackupError):
            verify_backup(path, key)
        # Even given a backup's name, an unfinished archive is refused (no manifest, or no
        # final chunk), by restore too.
        renamed = out / f"tmdb-backup-x-20260101T000000000000Z.tar{'.enc' if key else ''}"
        shutil.copyfile(path, renamed)
        assert [b.path for b in list_backups(out)] == [renamed]
        with pytest.raises(BackupError):
            await restore_backup(other_db, renamed, key=key, artifacts_dir=out / "a")
        renamed.unlink()
    assert await other_db.list_collection_names() == []


async def test_kill_9_during_create_leaves_nothing_list_or_restore_accepts(
    db: AsyncDatabase[Document],
    other_db: AsyncDatabase[Document],
    mongodb_uri: str,
    artifacts: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Films past one encrypted chunk (4 MiB) and a log that takes a while to dump after them:
    # the archive has bytes on disk while the backup is far from done.
    await fill(db, films=2500, blob=2048, log=30_000)
    out = tmp_path / "b"
    env = cli_env(mongodb_uri, db.name, artifacts, BACKUP_KEY=KEY)
    for ready, extra in (("dumping", ()), ("archiving", ("--encrypt",))):
        proc = _start(cli_command("create", "--out", str(out), *extra), env, tmp_path)
        try:
            await asyncio.to_thread(_kill_when, proc, out, ready)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await _nothing_accepted(out, other_db, base64.b64decode(KEY))
        listed = await cli(monkeypatch, env, "list", str(out))
        assert listed.exit_code == 0 and "no backups" in listed.stderr

    # The next create removes what the dead writers left and writes a whole backup.
    made = await cli(monkeypatch, env, "create", "--out", str(out))
    assert made.exit_code == 0, made.stderr
    assert _partial_dirs(out) == []
    assert [b.path for b in list_backups(out)] == [Path(_last_line(made.stdout))]


async def test_an_unencrypted_backup_is_in_mongodump_layout(
    filled: AsyncDatabase[Document], artifacts: Path, tmp_path: Path
) -> None:
    """mongorestore is not installed (Debian 12 has no mongo-tools), so its view of the files
    is checked structurally: the paths `mongorestore --gzip --dir dump` walks, concatenated
    BSON that decodes to the stored documents, and metadata.json as mongodump writes it."""
    path, _ = await create_backup(filled, artifacts_dir=artifacts, out_dir=tmp_path / "b")
    extracted = tmp_path / "x"
    with tarfile.open(path) as tar:
        tar.extractall(extracted, filter="data")
    dump = extracted / "dump" / filled.name
    names = sorted(p.name.removesuffix(".bson.gz") for p in dump.glob("*.bson.gz"))
    assert names == sorted(await filled.list_collection_names())
    assert load_manifest(path)["collections"][MOVIES]["count"] == 300
    for name in names:
        stored = sorted(
            [d async for d in filled[name].find({})], key=lambda d: bson.encode({"k": d["_id"]})
        )
        decoded: list[Document] = bson.decode_all(
            _gunzip(dump / f"{name}.bson.gz"), bson.CodecOptions(tz_aware=True)
        )
        assert sorted(decoded, key=lambda d: bson.encode({"k": d["_id"]})) == stored

        text = _gunzip(dump / f"{name}.metadata.json.gz").decode()
        meta = json.loads(text)  # strict JSON
        assert list(meta) == ["indexes", "uuid", "collectionName", "type"]  # no empty options
        assert meta["collectionName"] == name and meta["type"] == "collection"
        assert re.fullmatch(r"[0-9a-f]{32}", meta["uuid"])
        for index in meta["indexes"]:
            assert index["v"] == {"$numberInt": "2"}  # canonical extended JSON, as mongodump
            assert all(set(v) == {"$numberInt"} for v in index["key"].values())
        live = {ix["name"]: dict(ix) async for ix in await filled[name].list_indexes()}
        assert {ix["name"]: ix for ix in json_util.loads(text)["indexes"]} == live
    film_indexes = json.loads(_gunzip(dump / f"{UNNAMED}.metadata.json.gz"))
    assert {"film_y", "y_unique"} <= {ix["name"] for ix in film_indexes["indexes"]}


async def test_a_running_service_serves_the_restored_data(
    filled: AsyncDatabase[Document],
    client: AsyncMongoClient[Document],
    mongodb_uri: str,
    tmp_path: Path,
) -> None:
    # The backup holds 300 films; the service runs over a database with 40 others.
    path, _ = await create_backup(filled, artifacts_dir=tmp_path / "none", out_dir=tmp_path / "b")
    settings = analytics_support.app_settings(
        mongodb_uri, f"{filled.name}_live", tmp_path, snapshot_check_seconds=0.1
    )
    live = client[settings.mongodb_db]
    await fill(live, films=40, seed=1)
    async with analytics_support.serve(settings, drop_database=True) as http:
        first = await _summary(http, films=40)
        await restore_backup(live, path, key=None, artifacts_dir=settings.artifacts_dir, drop=True)
        second = await _summary(http, films=300)
        assert int(second.headers["x-data-version"]) > int(first.headers["x-data-version"])


async def _summary(http: httpx.AsyncClient, films: int) -> httpx.Response:
    """GET the summary until it counts `films` (the snapshot follows the data version in the
    background), at most 30 s."""
    deadline = time.monotonic() + 30
    while True:
        response = await http.get("/v1/analytics/summary")
        assert response.status_code == 200, response.text
        if response.json()["catalogue_films"] == films:
            return response
        assert time.monotonic() < deadline, response.json()
        await asyncio.sleep(0.2)


async def test_a_snapshot_persisted_before_a_restore_is_not_caught_up_over_it(
    filled: AsyncDatabase[Document], tmp_path: Path
) -> None:
    """The restore replaces the films without the change log, so a snapshot persisted before
    it must be read again in full, even when the log's counters happen to line up after (the
    backup's log is empty, and one batch written after the restore is entry 1 again)."""
    rng = random.Random(15)
    named = await meta_repo.catalogue_state(filled)  # as a running service names it
    path, _ = await create_backup(filled, artifacts_dir=tmp_path / "none", out_dir=tmp_path / "b")
    await upsert_movies(filled, [random_film(rng, 10_000 + i) for i in range(20)])
    store = SnapshotStore(tmp_path / "snapshots", filled.name)
    before = await load_snapshot(filled)
    assert before.size == 320 and store.save(before)

    await restore_backup(filled, path, key=None, artifacts_dir=tmp_path / "none", drop=True)
    await upsert_movies(filled, [random_film(rng, 20_000 + i) for i in range(30)])
    state = await meta_repo.catalogue_state(filled)
    assert state.changes_seq == before.lineage.changes_seq  # the log alone cannot tell
    assert before.lineage.catalogue == named.catalogue != state.catalogue
    assert store.load(state.catalogue, build_id=1) is None

    snap = await Refresher(filled, store).first(build_id=2)
    assert snap.lineage.source == "full" and snap.size == 330
    assert_same_snapshot(snap, await load_snapshot(filled))
