"""The local FerretDB looks films up by `_id` through its `_id` index, not with a table scan.

FerretDB v1's SQLite backend creates the unique `_id` index on `_ferretdb_sjson->"_id"` but
compared `_ferretdb_sjson->'$._id'` in its lookups, updates and deletes: the same value, a
different expression, so SQLite scanned the table for each (about 5 ms per 1,000 films).
`tools/ferretdb/patches/` fixes the spelling; `app/localdb.py` applies the patches at build
time and keys its cached binary by them. These tests read the query plan SQLite reports,
through FerretDB's own `explain` (which plans the very statement a find runs) and straight
from the SQLite file it writes."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo.asynchronous.database import AsyncDatabase

from app import localdb
from app.db import Document, is_ferretdb
from app.localdb import LocalServer
from app.services.movies_repo import MOVIES, insert_movies, movie_key

PATCH = localdb.PATCHES / "0001-sqlite-id-lookups-use-the-id-index.patch"


async def _films(db: AsyncDatabase[Document], n: int = 300) -> None:
    await insert_movies(db, [{"_id": movie_key(i), "id": i, "title": f"F{i}"} for i in range(n)])


async def _plan(db: AsyncDatabase[Document], collection: str, query: Document) -> str:
    answer = await db.command("explain", {"find": collection, "filter": query})
    return " | ".join(answer["queryPlanner"]["Plan"])


@pytest.fixture
async def ferretdb(db: AsyncDatabase[Document]) -> AsyncDatabase[Document]:
    if not await is_ferretdb(db):
        pytest.skip("a FerretDB query plan; MongoDB looks `_id` up in its own index")
    return db


async def test_a_film_lookup_by_string_id_searches_the_id_index(
    ferretdb: AsyncDatabase[Document],
) -> None:
    await _films(ferretdb)
    plan = await _plan(ferretdb, MOVIES, {"_id": movie_key(42)})
    assert "USING INDEX" in plan and "__id_" in plan, plan
    assert "SCAN" not in plan, plan
    # Still the right answers: a hit, a miss, an update and a delete by `_id`.
    movies = ferretdb[MOVIES]
    assert (await movies.find_one({"_id": movie_key(42)}) or {}).get("title") == "F42"
    assert await movies.find_one({"_id": movie_key(9999)}) is None
    await movies.update_one({"_id": movie_key(7)}, {"$set": {"title": "Seven"}})
    assert (await movies.find_one({"_id": movie_key(7)}) or {}).get("title") == "Seven"
    await movies.delete_one({"_id": movie_key(8)})
    assert await movies.count_documents({}) == 299


async def test_an_object_id_lookup_searches_the_id_index_too(
    ferretdb: AsyncDatabase[Document],
) -> None:
    ids = [ObjectId() for _ in range(50)]
    await ferretdb["plan_check"].insert_many([{"_id": i, "n": k} for k, i in enumerate(ids)])
    plan = await _plan(ferretdb, "plan_check", {"_id": ids[10]})
    assert "USING INDEX" in plan and "SCAN" not in plan, plan
    assert (await ferretdb["plan_check"].find_one({"_id": ids[10]}) or {}).get("n") == 10


def _patched_expression() -> str:
    """The `_id` expression the patch gives FerretDB (its `IDColumn`), as SQL."""
    added = re.search(r'^\+\s*IDColumn = DefaultColumn \+ "(.+)"$', PATCH.read_text(), re.M)
    assert added, "the patch no longer sets IDColumn"
    return "_ferretdb_sjson" + added.group(1)


async def test_the_sqlite_file_shows_why_the_original_expression_scanned(
    ferretdb: AsyncDatabase[Document], db_server: LocalServer
) -> None:
    await _films(ferretdb)
    path = db_server.sqlite_dir / f"{ferretdb.name}.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        (table,) = con.execute(
            "SELECT table_name FROM _ferretdb_collections WHERE name = ?", (MOVIES,)
        ).fetchone()
        (index_sql,) = con.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (f"{table}__id_",)
        ).fetchone()
        assert '_ferretdb_sjson->"_id"' in index_sql

        def plan(expression: str) -> str:
            rows = con.execute(
                f'EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM "{table}" WHERE {expression} = ?',
                ('"42"',),
            ).fetchall()
            return " | ".join(str(row[-1]) for row in rows)

        # Upstream's spelling selects the same value but is not the indexed expression.
        assert plan("_ferretdb_sjson->'$._id'").startswith("SCAN")
        assert "USING INDEX" in plan(_patched_expression())
        row = con.execute(
            f'SELECT _ferretdb_sjson FROM "{table}" WHERE {_patched_expression()} = ?', ('"42"',)
        ).fetchone()
        assert row is not None and '"title":"F42"' in row[0]


def test_the_cached_binary_is_keyed_by_the_patches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patches = tmp_path / "patches"
    patches.mkdir()
    monkeypatch.setattr(localdb, "PATCHES", patches)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    unpatched = localdb.cache_dir()
    (patches / PATCH.name).write_bytes(PATCH.read_bytes())
    patched = localdb.cache_dir()
    assert localdb.patch_files() == [patches / PATCH.name]
    (patches / PATCH.name).write_bytes(PATCH.read_bytes() + b"\n")
    edited = localdb.cache_dir()
    (patches / "0002-more.patch").write_text("")
    added = localdb.cache_dir()
    keys = {unpatched, patched, edited, added}
    assert len(keys) == 4, keys
    assert all(k.parent == tmp_path / "cache" / "tmdb-analytics" / "ferretdb" for k in keys)
    assert all(k.name.startswith(localdb.FERRETDB_VERSION + "-") for k in keys)
    (patches / "0002-more.patch").unlink()
    assert localdb.cache_dir() == edited  # the same inputs, the same binary


def test_the_shipped_patch_applies_to_the_pinned_source(tmp_path: Path) -> None:
    """The patch applies cleanly to FerretDB's file as the pinned module has it (read from the
    Go module cache the build filled; skipped where it is gone)."""
    original = _module_cache_source() / "internal/backends/sqlite/metadata/metadata.go"
    if not original.exists():
        pytest.skip(f"{original} is not in the Go module cache")
    target = tmp_path / "internal/backends/sqlite/metadata/metadata.go"
    target.parent.mkdir(parents=True)
    target.write_bytes(original.read_bytes())
    localdb._apply_patch(PATCH, tmp_path, {})
    assert "->'$._id'" in original.read_text()
    assert "IDColumn = DefaultColumn + \"->'_id'\"" in target.read_text()


def _module_cache_source() -> Path:
    try:
        gomodcache = subprocess.run(
            [localdb._go_executable(), "env", "GOMODCACHE"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "GOTOOLCHAIN": "local"},
        ).stdout.strip()
    except (localdb.LocalDbError, subprocess.CalledProcessError):
        pytest.skip("no Go toolchain to locate the module cache")
    # The module cache escapes upper-case letters as "!" + lower case.
    return Path(gomodcache) / f"github.com/!ferret!d!b/!ferret!d!b@{localdb.FERRETDB_VERSION}"
