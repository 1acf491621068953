"""CSV import/export on the real shared files, against the real local database."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services.csv_io import CsvFormatError, export_csv, import_imdb_csv, import_tmdb_csv
from app.services.indexes import ensure_indexes
from app.services.meta_repo import META, SWAP_MARKER, get_data_version
from app.services.movies_repo import MOVIES, STAGING, movie_key
from app.services.movies_rewrite import apply_updates, recover_interrupted_swap
from tests.support import IMDB_CSV, TMDB_TRAIN_CSV, require_shared

HEADER = (
    "budget,genres,homepage,id,keywords,original_language,original_title,overview,popularity,"
    "production_companies,production_countries,release_date,revenue,runtime,spoken_languages,"
    "status,tagline,title,vote_average,vote_count"
)


def _row(movie_id: str, title: str, budget: str = "1000000", genres: str = "[]") -> str:
    return (
        f'{budget},"{genres}",,{movie_id},[],en,{title},"An overview, with a comma",1.5,'
        f"[],[],2001-05-04,5000000,100,[],Released,,{title},6.5,10"
    )


async def test_train_csv_loads_every_film_once_and_rerun_changes_nothing(
    db: AsyncDatabase[Document],
) -> None:
    path = require_shared(TMDB_TRAIN_CSV)
    await ensure_indexes(db)
    first = await import_tmdb_csv(db, path)
    assert first.rows == 3804
    assert first.summary.as_dict() == {
        "inserted": 3804,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
    }
    assert await db[MOVIES].count_documents({}) == 3804
    version = await get_data_version(db)

    second = await import_tmdb_csv(db, path)
    assert second.summary.as_dict() == {
        "inserted": 0,
        "updated": 0,
        "unchanged": 3804,
        "rejected": 0,
    }
    assert await db[MOVIES].count_documents({}) == 3804
    assert await get_data_version(db) == version, "an unchanged import must not bump the version"

    avatar = await db[MOVIES].find_one({"id": 19995})
    assert avatar is not None
    assert avatar["title"] == "Avatar"
    assert avatar["genres"][:2] == ["Action", "Adventure"]
    assert avatar["budget"] == 237_000_000
    assert avatar["profit"] == avatar["revenue"] - avatar["budget"]
    assert avatar["release_year"] == 2009 and avatar["release_month"] == 12
    assert "culture clash" in avatar["keywords"]
    # TMDB's keyword named by a lone NBSP (Good bye, Lenin!) is dropped, not stored.
    lenin = await db[MOVIES].find_one({"id": 338})
    assert lenin is not None and "berlin wall" in lenin["keywords"]
    assert all(k.strip() for k in lenin["keywords"]), lenin["keywords"]
    assert avatar["production_countries"] == ["US", "GB"]
    # Unknown money is null, never zero.
    assert await db[MOVIES].count_documents({"budget": 0}) == 0
    assert await db[MOVIES].count_documents({"revenue": 0}) == 0
    assert await db[MOVIES].count_documents({"budget": None}) > 0


async def test_broken_rows_are_reported_by_line_and_good_rows_load(
    db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    lines = [
        HEADER,
        _row("1", "Good One"),
        _row("2", "Bad Budget", budget="lots"),
        _row("3", "Broken Json", genres='[{""name"": ""Action""'),
        _row("", "No Id"),
        "4,too,few,cells",
        _row("5", "Good Two"),
        # A quoted multi-line overview must not shift the line numbers that follow.
        _row("6", "Multi").replace("An overview, with a comma", "line one\nline two"),
        _row("7", "Negative", budget="-5"),
        _row("8", "Good Three"),
    ]
    path = tmp_path / "broken.csv"
    path.write_text("\n".join(lines) + "\n")
    report = await import_tmdb_csv(db, path)
    errors = dict(report.errors)
    assert report.summary.inserted == 4
    assert report.summary.rejected == 5
    assert set(errors) == {3, 4, 5, 6, 10}
    assert "budget" in errors[3] and "lots" in errors[3]
    assert "genres" in errors[4] and "JSON" in errors[4]
    assert "id" in errors[5]
    assert "cells" in errors[6]
    assert "budget" in errors[10]
    ids = sorted([d["id"] async for d in db[MOVIES].find({}, {"id": 1})])
    assert ids == [1, 5, 6, 8]


async def test_a_row_that_is_not_utf8_is_reported_and_the_others_load(
    db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    """One undecodable byte used to stop the import with a UnicodeDecodeError (and a
    traceback), losing every row after it; now it costs its own row, named by line."""
    lines = [
        HEADER.encode(),
        _row("1", "Good One").encode(),
        _row("2", "Bad Byte").encode().replace(b"Bad Byte", b"Bad \xed\xa0\x80Byte", 1),
        _row("3", "Good Two").encode(),
        _row("4", "Latin-1 Caf\u00e9").encode("latin-1"),
        _row("5", "Caf\u00e9 in UTF-8").encode(),
    ]
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = await import_tmdb_csv(db, path)
    errors = dict(report.errors)
    assert set(errors) == {3, 5}
    assert "not UTF-8" in errors[3] and "0xED" in errors[3] and "original_title" in errors[3]
    assert "0xE9" in errors[5]
    titles = sorted([d["title"] async for d in db[MOVIES].find({}, {"title": 1})])
    assert titles == ["Café in UTF-8", "Good One", "Good Two"]

    imdb = require_shared(IMDB_CSV).read_bytes().split(b"\n")
    imdb[3] = imdb[3].replace(b",", b",\xff", 1)
    broken = tmp_path / "imdb.csv"
    broken.write_bytes(b"\n".join(imdb[:50]))
    joined = await import_imdb_csv(db, broken)
    assert any(line == 4 and "not UTF-8" in reason for line, reason in joined.errors)


@pytest.mark.parametrize("content", [b"", b"a,b\n1,2\n", bytes(range(256)) * 20])
async def test_a_file_that_is_not_a_film_csv_is_refused_whole(
    db: AsyncDatabase[Document], tmp_path: Path, content: bytes
) -> None:
    """Empty, other columns, or not text at all: one CsvFormatError naming the file (the CLI
    prints it in a line and exits 2), never a parser's traceback."""
    path = tmp_path / "odd.csv"
    path.write_bytes(content)
    with pytest.raises(CsvFormatError, match=r"odd\.csv"):
        await import_tmdb_csv(db, path)
    with pytest.raises(CsvFormatError, match=r"odd\.csv"):
        await import_imdb_csv(db, path)


async def test_blank_list_names_are_dropped_not_stored(
    db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    nbsp = "\u00a0"
    row = {
        "id": "9",
        "title": "Blank Names",
        "genres": [{"id": 1, "name": nbsp}, {"id": 28, "name": "Action"}, "  "],
        "keywords": [{"id": 13091, "name": nbsp}, {"id": 2, "name": " heist "}],
        "production_companies": [{"id": 3, "name": "   "}, {"id": 4, "name": "Studio"}],
        "production_countries": [{"iso_3166_1": "US", "name": ""}, {"iso_3166_1": " "}],
        "spoken_languages": [{"iso_639_1": "xx", "name": ""}],
        "cast": ["", {"name": nbsp, "order": 0}, {"name": "Lead", "order": 1}],
        "crew": [{"name": nbsp, "job": "Director"}, {"name": "Boss", "job": "Director"}],
    }
    path = tmp_path / "blank.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow({k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()})
    report = await import_tmdb_csv(db, path)
    assert (report.summary.inserted, report.summary.rejected) == (1, 0), report.errors
    doc = await db[MOVIES].find_one({"id": 9})
    assert doc is not None
    assert doc["genres"] == ["Action"]
    assert doc["keywords"] == ["heist"]
    assert doc["production_companies"] == ["Studio"]
    assert doc["production_countries"] == ["US"]
    assert doc["spoken_languages"] == ["xx"]
    assert [c["name"] for c in doc["cast"]] == ["Lead"]
    assert [c["name"] for c in doc["crew"]] == ["Boss"]


async def test_interrupted_import_rerun_has_no_duplicates_or_losses(
    db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    source = require_shared(TMDB_TRAIN_CSV)
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    partial = tmp_path / "partial.csv"
    with partial.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows[:1001])  # as if killed after 1,000 films
    await import_tmdb_csv(db, partial, batch_size=300)
    assert await db[MOVIES].count_documents({}) == 1000
    report = await import_tmdb_csv(db, source)
    assert report.summary.inserted == 2804
    assert report.summary.unchanged == 1000
    assert await db[MOVIES].count_documents({}) == 3804
    ids = [d["id"] async for d in db[MOVIES].find({}, {"id": 1})]
    assert len(set(ids)) == len(ids) == 3804


async def test_imdb_join_enriches_films_and_survives_tmdb_reimport(
    db: AsyncDatabase[Document],
) -> None:
    await import_tmdb_csv(db, require_shared(TMDB_TRAIN_CSV))
    report = await import_imdb_csv(db, require_shared(IMDB_CSV))
    assert report.duplicates == 124  # repeated IMDb links
    enriched = await db[MOVIES].count_documents({"imdb": {"$exists": True}})
    assert enriched / 3804 > 0.9, enriched
    avatar = await db[MOVIES].find_one({"id": 19995})
    assert avatar is not None
    assert avatar["imdb"]["director"] == "James Cameron"
    assert avatar["imdb"]["imdb_id"] == "tt0499549"
    assert avatar["imdb"]["content_rating"] == "PG-13"
    assert "CCH Pounder" in avatar["imdb"]["actors"]

    again = await import_imdb_csv(db, require_shared(IMDB_CSV))
    assert again.updated == 0
    await import_tmdb_csv(db, require_shared(TMDB_TRAIN_CSV))
    assert await db[MOVIES].count_documents({"imdb": {"$exists": True}}) == enriched
    assert await db[MOVIES].count_documents({}) == 3804


async def test_export_reimports_to_the_same_films(
    db: AsyncDatabase[Document], client: object, tmp_path: Path
) -> None:
    await import_tmdb_csv(db, require_shared(TMDB_TRAIN_CSV))
    await import_imdb_csv(db, require_shared(IMDB_CSV))
    out = tmp_path / "export.csv"
    assert await export_csv(db, out) == 3804

    copy = db.client[db.name + "_copy"]
    try:
        report = await import_tmdb_csv(copy, out)
        assert report.summary.inserted == 3804 and report.summary.rejected == 0

        def key(d: Document) -> tuple[object, ...]:
            return (d["content_hash"], d.get("imdb"))

        original = {d["id"]: key(d) async for d in db[MOVIES].find({})}
        restored = {d["id"]: key(d) async for d in copy[MOVIES].find({})}
        assert restored == original
    finally:
        await db.client.drop_database(copy.name)


async def test_bulk_update_swap_is_recoverable(db: AsyncDatabase[Document]) -> None:
    await db[MOVIES].insert_many(
        [{"_id": movie_key(i), "id": i, "title": f"t{i}"} for i in range(1, 51)]
    )
    await apply_updates(db, {i: {"title": f"new{i}"} for i in range(1, 31)})  # rewrite path
    titles = {d["id"]: d["title"] async for d in db[MOVIES].find({})}
    assert len(titles) == 50
    assert titles[1] == "new1" and titles[30] == "new30" and titles[31] == "t31"
    assert STAGING not in await db.list_collection_names()

    # Simulate a crash between dropping `movies` and renaming the staging copy.
    await db[STAGING].insert_many([{"_id": movie_key(1), "id": 1, "title": "staged"}])
    await db[META].insert_one({"_id": SWAP_MARKER})
    await db.drop_collection(MOVIES)
    await recover_interrupted_swap(db)
    assert [d["title"] async for d in db[MOVIES].find({})] == ["staged"]
    assert await db[META].find_one({"_id": SWAP_MARKER}) is None


@pytest.mark.parametrize("small", [True])
async def test_small_updates_apply_in_place(db: AsyncDatabase[Document], small: bool) -> None:
    await db[MOVIES].insert_many(
        [{"_id": movie_key(i), "id": i, "title": f"t{i}"} for i in range(1, 6)]
    )
    await apply_updates(db, {2: {"title": "two"}, 9: {"id": 9, "title": "nine"}})
    titles = {d["id"]: d["title"] async for d in db[MOVIES].find({})}
    assert titles == {1: "t1", 2: "two", 3: "t3", 4: "t4", 5: "t5", 9: "nine"}
