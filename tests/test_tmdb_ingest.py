"""Ingest from the fake TMDB server (a real HTTP socket) into the real local FerretDB:
pagination, splitting past the 500-page cap, 401/404/rejects, blank names, --max-movies,
films without a release date (the undated pass, --ids-file), incremental mode and what
--incremental remembers, and the acceptance runs with 429s and 503s, interrupted and
resumed."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.db import INGEST_RUNS, Document
from app.services import tmdb_ingest as tmdb_ingest_module
from app.services.movies_repo import MOVIES, movie_key
from app.services.tmdb_client import TmdbAuthError, TmdbClient
from app.services.tmdb_ingest import (
    IdsFileError,
    IngestOptions,
    IngestProgress,
    NoSyncPointError,
    ingest_tmdb,
    read_id_export,
)
from tests.fake_tmdb import TOKEN, FakeTmdb, catalogue, id_export, make_film, undated

CLI = Path(sys.executable).parent / "tmdb-analytics"


def tmdb(base_url: str, token: str = TOKEN, **options: Any) -> TmdbClient:
    settings: dict[str, Any] = {"rate_limit": 2000, "backoff_base": 0.05, **options}
    return TmdbClient(token, base_url, **settings)


@pytest.fixture
def serve() -> Iterator[Any]:
    """`base_url = serve(FakeTmdb(...))`: runs the fake until the test ends."""
    stack: list[Any] = []

    def start(fake: FakeTmdb) -> str:
        context = fake.serve()
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


async def stored(db: AsyncDatabase[Document]) -> list[Document]:
    projection = {"_id": 1, "id": 1, "title": 1, "cast": 1, "crew": 1, "keywords": 1}
    return await db[MOVIES].find({}, projection).to_list()


async def assert_exactly_once(db: AsyncDatabase[Document], expected: set[int]) -> None:
    docs = await stored(db)
    ids = [d["id"] for d in docs]
    assert len(ids) == len(set(ids)), "a film was stored twice"
    assert set(ids) == expected, f"missing {sorted(expected - set(ids))[:10]}"
    for doc in docs:
        assert doc["cast"] and doc["keywords"], doc["id"]
        assert {c["job"] for c in doc["crew"]} == {"Director", "Screenplay"}, doc["id"]


async def until_stored(
    db: AsyncDatabase[Document], count: int, process: asyncio.subprocess.Process | None = None
) -> None:
    """Poll until `count` films are stored (the writer runs elsewhere; no event to wait on)."""
    deadline = time.monotonic() + 30
    while await db[MOVIES].count_documents({}) < count:
        assert process is None or process.returncode is None, "the ingest ended too early"
        assert time.monotonic() < deadline, "the ingest made no progress"
        await asyncio.sleep(0.05)


async def only_run(db: AsyncDatabase[Document]) -> Document:
    runs = await db[INGEST_RUNS].find({}).to_list()
    assert len(runs) == 1, [r["_id"] for r in runs]
    return runs[0]


async def test_full_ingest_pages_through_and_stores_each_film_once(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    fake = FakeTmdb(catalogue({1995: 30, 2001: 25, 2010: 12}), rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        summary = await ingest_tmdb(db, client, IngestOptions(batch_size=25))
    assert (summary.status, summary.inserted, summary.skipped_404) == ("done", 67, 0)
    # 4 pages of 20, the undated pass's first page in each order (no film without a date), details
    assert summary.requests == fake.stats["requests"] == 4 + 2 + 67
    await assert_exactly_once(db, set(fake.films))
    doc = await db[MOVIES].find_one({"_id": movie_key(100)})
    assert doc is not None and doc["source"] == "tmdb-api"
    assert doc["genres"] and isinstance(doc["genres"][0], str)
    assert doc["keywords"] == ["keyword 0", "keyword 1", "keyword 2"]
    run = await only_run(db)
    assert run["status"] == "done" and run["counts"]["inserted"] == 67
    assert run["current"] is None and run["todo"] == []
    assert run["partitions_done"] == [f"1870-01-01/{run['params']['last_day']}", "undated"]

    async with tmdb(base_url) as client:  # a finished run is not resumed: a new one starts
        again = await ingest_tmdb(db, client, IngestOptions(batch_size=25))
    assert (again.resumed, again.inserted, again.unchanged) == (False, 0, 67)
    await assert_exactly_once(db, set(fake.films))


async def test_a_range_past_500_pages_is_split_until_each_part_fits(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    # One film per page: 2003 alone needs 520 pages, past TMDB's cap of 500.
    fake = FakeTmdb(catalogue({2003: 520, 2005: 3}), page_size=1, rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url, concurrency=16) as client:
        summary = await ingest_tmdb(db, client, IngestOptions(batch_size=200))
    assert summary.inserted == 523 and not summary.warnings
    assert fake.stats["400"] == 0 and max(fake.pages_seen) <= 500
    parts = [p.split("/") for p in (await only_run(db))["partitions_done"] if p != "undated"]
    assert not any(p[0] <= "2003-01-01" and p[1] >= "2003-12-31" for p in parts)  # 2003 split
    assert parts == sorted(parts) and parts[0][0] == "1870-01-01"  # in order, disjoint
    assert all(a[1] < b[0] for a, b in itertools.pairwise(parts))
    await assert_exactly_once(db, set(fake.films))


async def test_a_single_day_past_the_cap_takes_the_pages_it_can_and_warns(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    films = catalogue({2004: 13}, spread_days=1) + catalogue({2006: 4}, first_id=500)
    fake = FakeTmdb(films, page_size=2, max_page=5, rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        summary = await ingest_tmdb(db, client, IngestOptions(max_pages=5))
    assert summary.inserted == 10 + 4
    assert len(summary.warnings) == 1 and summary.warnings[0].startswith("2004-01-01: 7 pages")
    assert fake.stats["400"] == 0
    assert (await only_run(db))["warnings"] == summary.warnings


async def test_401_stops_the_run_with_a_clear_message_and_the_run_resumes_later(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    fake = FakeTmdb(catalogue({2000: 10}), rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url, token="not-the-token") as client:
        with pytest.raises(TmdbAuthError, match=r"TMDB_API_TOKEN rejected.*Invalid API key"):
            await ingest_tmdb(db, client)
    run = await only_run(db)
    assert run["status"] == "failed" and "TMDB_API_TOKEN rejected" in run["last_error"]
    assert fake.stats["401"] == 1 and await db[MOVIES].count_documents({}) == 0

    async with tmdb(base_url) as client:
        summary = await ingest_tmdb(db, client)
    assert summary.resumed and summary.run_id == run["_id"] and summary.inserted == 10


async def test_404_is_skipped_and_bad_records_are_rejected_both_recorded(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    films = catalogue({2002: 12})
    films[5]["runtime"] = 5000  # past MovieDocument's bound
    fake = FakeTmdb(films, rate_limit=None, missing={103, 108})
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        summary = await ingest_tmdb(db, client)
    assert (summary.inserted, summary.skipped_404, summary.rejected) == (9, 2, 1)
    run = await only_run(db)
    assert run["counts"]["skipped_404"] == 2 and run["errors_total"] == 3
    by_id = {e["id"]: e for e in run["errors"]}
    assert by_id[103]["kind"] == by_id[108]["kind"] == "skipped_404"
    assert by_id[105]["kind"] == "rejected" and "runtime" in by_id[105]["reason"]
    await assert_exactly_once(db, set(fake.films) - {103, 105, 108})


async def test_blank_names_in_tmdb_records_are_dropped_not_stored(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    nbsp = "\u00a0"
    films = catalogue({2003: 3})
    film = films[1]
    film["genres"].append({"id": 99, "name": " "})
    film["keywords"]["keywords"].insert(0, {"id": 13091, "name": nbsp})
    film["production_companies"].append({"id": 5, "logo_path": None, "name": nbsp})
    film["spoken_languages"].append({"english_name": "No Language", "iso_639_1": "xx", "name": ""})
    film["credits"]["cast"].insert(0, {"id": 1, "name": nbsp, "character": "?", "order": 0})
    film["credits"]["crew"].append(
        {"id": 2, "name": nbsp, "department": "Directing", "job": "Director"}
    )
    base_url = serve(FakeTmdb(films, rate_limit=None))
    async with tmdb(base_url) as client:
        summary = await ingest_tmdb(db, client)
    assert (summary.inserted, summary.rejected) == (3, 0), summary.errors
    doc = await db[MOVIES].find_one({"_id": movie_key(film["id"])})
    assert doc is not None
    assert doc["keywords"] == [k["name"] for k in film["keywords"]["keywords"][1:]]
    assert doc["genres"] == [g["name"] for g in film["genres"][:-1]]
    assert doc["production_companies"] == [film["production_companies"][0]["name"]]
    assert doc["spoken_languages"] == ["en", "xx"]
    assert nbsp not in [c["name"] for c in doc["cast"]] and len(doc["cast"]) == 4
    assert {c["job"] for c in doc["crew"]} == {"Director", "Screenplay"}
    assert all(c["name"].strip() for c in doc["crew"])


async def test_max_movies_caps_a_run_and_the_next_one_continues(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    fake = FakeTmdb(catalogue({1999: 30, 2007: 20}), rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        first = await ingest_tmdb(db, client, IngestOptions(max_movies=15, batch_size=10))
        second = await ingest_tmdb(db, client, IngestOptions(max_movies=15, batch_size=10))
        last = await ingest_tmdb(db, client, IngestOptions(batch_size=10))
    assert (first.status, first.inserted) == ("paused", 15)
    assert (second.resumed, second.status, second.inserted) == (True, "paused", 15)
    assert (last.resumed, last.status, last.inserted) == (True, "done", 20)
    assert set(fake.detail_hits.values()) == {1}  # no film fetched twice
    await assert_exactly_once(db, set(fake.films))


async def test_incremental_refetches_changed_films_in_14_day_windows(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    fake = FakeTmdb(catalogue({2020: 20}), rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        await ingest_tmdb(db, client)
        fake.change(101, date(2024, 3, 2), title="Renamed 101")
        fake.change(115, date(2024, 3, 20), vote_count=99_999)
        fake.change(900, date(2024, 3, 30), release_date="2024-03-01", title="A new film")
        fake.change(110, date(2024, 3, 10))
        fake.missing.add(110)  # deleted on TMDB
        fake.change(102, date(2024, 2, 20), title="Changed before the window")
        options = IngestOptions(since=date(2024, 3, 1), until=date(2024, 3, 31))
        summary = await ingest_tmdb(db, client, options)
    assert summary.kind == "incremental"
    assert (summary.updated, summary.inserted, summary.skipped_404) == (2, 1, 1)
    assert fake.stats["changes"] == 3 and fake.stats["422"] == 0  # 31 days in three windows
    assert fake.detail_hits[102] == 1  # outside the window: not refetched
    doc = await db[MOVIES].find_one({"_id": movie_key(101)})
    assert doc is not None and doc["title"] == "Renamed 101"
    assert await db[MOVIES].count_documents({}) == 21
    runs = await db[INGEST_RUNS].find({"kind": "incremental"}).to_list()
    assert len(runs) == 1 and runs[0]["status"] == "done"
    assert runs[0]["partitions_done"] == [
        "2024-03-01/2024-03-14",
        "2024-03-15/2024-03-28",
        "2024-03-29/2024-03-31",
    ]


# --- films without a release date: the undated pass and TMDB's daily id export ------------


def crash_at(count: int) -> Any:
    """A progress callback that fails once `count` films were fetched (after their batch was
    written and checkpointed), as a crash mid-run would."""

    def progress(p: IngestProgress) -> None:
        if p.completed >= count:
            raise RuntimeError("simulated crash")

    return progress


@pytest.mark.parametrize(
    ("interruption", "undated_first"), [("max_movies", True), ("crashed", False)]
)
async def test_undated_films_are_stored_once_after_an_interrupted_run_and_a_rerun(
    db: AsyncDatabase[Document], serve: Any, interruption: str, undated_first: bool
) -> None:
    films = catalogue({1999: 20, 2008: 15}) + undated(25, first_id=700)
    fake = FakeTmdb(films, rate_limit=None, undated_first=undated_first)
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        if interruption == "max_movies":
            first = await ingest_tmdb(db, client, IngestOptions(batch_size=10, max_movies=45))
            assert (first.status, first.inserted) == ("paused", 45)
        else:
            with pytest.raises(RuntimeError):
                await ingest_tmdb(db, client, IngestOptions(batch_size=10), crash_at(45))
        run = await only_run(db)
        assert run["current"]["range"] == "undated" and len(run["current"]["written"]) == 10
        rerun = await ingest_tmdb(db, client, IngestOptions(batch_size=10))
    assert (rerun.resumed, rerun.status, rerun.inserted) == (True, "done", 15)
    await assert_exactly_once(db, set(fake.films))
    assert set(fake.detail_hits.values()) == {1}  # listed again, never fetched again
    assert await db[MOVIES].count_documents({"release_date": None}) == 25
    run = await only_run(db)
    assert run["partitions_done"][-1] == "undated" and run["todo"] == []


async def test_the_undated_pass_stops_at_the_page_cap_and_points_to_the_ids_file(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    # 20 undated films, 5 per page, 2 pages at most: each end of the order gives 10 at best.
    fake = FakeTmdb(
        catalogue({2001: 3}) + undated(20, first_id=800), page_size=5, max_page=2, rate_limit=None
    )
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        summary = await ingest_tmdb(db, client, IngestOptions(max_pages=2))
    assert summary.status == "done" and summary.inserted == 3 + 17
    assert fake.stats["400"] == 0
    assert summary.warnings and all("--ids-file" in w for w in summary.warnings)


async def test_ids_file_lists_every_film_and_resumes_after_a_crash(
    db: AsyncDatabase[Document], serve: Any, tmp_path: Path
) -> None:
    adult = {**make_film(950, "2011-05-05"), "adult": True}
    films = [*catalogue({2010: 12}), *undated(8, first_id=600), adult]
    fake = FakeTmdb(films, rate_limit=None, missing={605})  # 605: deleted since the export
    lines = ["not json", '{"adult":false,"original_title":"No id"}', "", '["a", "list"]']
    path = id_export(tmp_path / "movie_ids_05_01_2026.json.gz", films, lines)
    base_url = serve(fake)
    options = IngestOptions(ids_file=path, batch_size=5, ids_per_partition=250)
    async with tmdb(base_url) as client:
        with pytest.raises(RuntimeError):
            await ingest_tmdb(db, client, options, crash_at(10))
        failed = await only_run(db)
        assert failed["params"]["listing"] == "ids-file" and failed["status"] == "failed"
        # A discover-listed ingest leaves the unfinished ids-file run alone, and vice versa.
        other = await ingest_tmdb(db, client, IngestOptions(max_movies=1))
        assert not other.resumed and other.run_id != failed["_id"]
        rerun = await ingest_tmdb(db, client, options)
    assert (rerun.resumed, rerun.run_id, rerun.status) == (True, failed["_id"], "done")
    assert rerun.skipped_404 == 1
    expected = {f["id"] for f in films} - {950, 605}
    await assert_exactly_once(db, expected)
    assert fake.detail_hits[950] == 0  # adult entries are left out, as discover does
    assert sum(fake.detail_hits.values()) <= len(expected) + 1  # +1: the discover run's film
    reported = [w for w in rerun.warnings if "movie_ids_05_01_2026.json.gz" in w]
    assert [w.split(":")[0] for w in reported] == [
        "movie_ids_05_01_2026.json.gz line 22",
        "movie_ids_05_01_2026.json.gz line 23",
        "movie_ids_05_01_2026.json.gz line 25",
    ]
    run = await db[INGEST_RUNS].find_one({"_id": failed["_id"]})
    assert run is not None
    # Up to the highest id listed (the adult 950 is not), the last range open-ended.
    assert run["partitions_done"] == ["ids:1-250", "ids:251-500", "ids:501-"]


def test_ids_file_reading_malformed_lines_plain_text_and_a_truncated_gzip(tmp_path: Path) -> None:
    films = catalogue({2001: 3})
    noise = [f"garbage {n}" for n in range(25)]
    listing = read_id_export(id_export(tmp_path / "movie_ids.json.gz", films, noise))
    assert listing.ids == [100, 101, 102] and listing.malformed_total == 25
    assert len(listing.malformed) == 20 and listing.malformed[0].startswith(
        "movie_ids.json.gz line 4:"
    )
    # Plain text (already gunzipped) reads the same.
    plain = tmp_path / "movie_ids.json"
    plain.write_bytes(gzip.decompress((tmp_path / "movie_ids.json.gz").read_bytes()))
    assert read_id_export(plain).ids == listing.ids
    # A download cut short is no complete listing: refused as a whole.
    truncated = tmp_path / "cut.json.gz"
    truncated.write_bytes((tmp_path / "movie_ids.json.gz").read_bytes()[:-12])
    with pytest.raises(IdsFileError, match=r"cut\.json\.gz"):
        read_id_export(truncated)


# --- incremental sync remembers where the last successful sync ended ---------------------


async def test_incremental_without_since_continues_from_the_last_successful_sync(
    db: AsyncDatabase[Document], serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = {"now": datetime(2024, 3, 1, 9, 0, tzinfo=UTC)}
    monkeypatch.setattr(tmdb_ingest_module, "_now", lambda: clock["now"])
    fake = FakeTmdb(catalogue({2020: 10}), rate_limit=None)
    base_url = serve(fake)
    async with tmdb(base_url) as client:
        with pytest.raises(NoSyncPointError, match=r"full sync.*--since"):
            await ingest_tmdb(db, client, IngestOptions(incremental=True))
        assert await db[INGEST_RUNS].count_documents({}) == 0

        fake.change(101, date(2024, 2, 20), title="Before the full sync")
        await ingest_tmdb(db, client)  # a full sync on 2024-03-01
        fake.change(102, date(2024, 3, 1), title="Later on the day of the full sync")
        fake.change(103, date(2024, 3, 8), title="A week later")
        clock["now"] = datetime(2024, 3, 10, 9, 0, tzinfo=UTC)
        first = await ingest_tmdb(db, client, IngestOptions(incremental=True))
        assert (first.kind, first.since, first.updated) == ("incremental", date(2024, 3, 1), 2)
        assert fake.detail_hits[101] == 1  # changed before the full sync began: not refetched

        fake.change(104, date(2024, 3, 15), title="After the first incremental")
        clock["now"] = datetime(2024, 3, 20, 9, 0, tzinfo=UTC)
        second = await ingest_tmdb(db, client, IngestOptions(incremental=True))
        assert (second.since, second.updated) == (date(2024, 3, 10), 1)
        assert fake.detail_hits[103] == 2  # the first incremental's changes are not redone

        # --since overrides what was remembered.
        third = await ingest_tmdb(
            db, client, IngestOptions(incremental=True, since=date(2024, 2, 19))
        )
        assert third.since == date(2024, 2, 19) and third.updated == 0
        assert fake.detail_hits[101] == 2 and fake.detail_hits[104] == 3
    runs = await db[INGEST_RUNS].find({}, sort=[("started_at", 1)]).to_list()
    assert [r["sync_point"] for r in runs] == [
        "2024-03-01",
        "2024-03-10",
        "2024-03-20",
        "2024-03-20",
    ]


# --- acceptance: 429s past 40 req/s, 503s now and then, interrupted and resumed -----------


def flaky_tmdb() -> FakeTmdb:
    return FakeTmdb(
        catalogue({1998: 50, 2004: 60, 2012: 40}), rate_limit=40, error_rate=0.05, seed=7
    )


@pytest.mark.parametrize("interruption", ["cancelled", "crashed"])
async def test_acceptance_interrupted_ingest_resumes_without_duplicates_or_losses(
    db: AsyncDatabase[Document], serve: Any, interruption: str
) -> None:
    fake = flaky_tmdb()
    base_url = serve(fake)
    options = IngestOptions(batch_size=20)
    seen: list[IngestProgress] = []

    def crash_after_two_batches(progress: IngestProgress) -> None:
        seen.append(progress)
        if interruption == "crashed" and progress.completed >= 40:
            raise RuntimeError("simulated crash")

    # 80 req/s against a server that allows 40: the client must live with 429s.
    started = time.monotonic()
    async with tmdb(base_url, rate_limit=80) as client:
        task = asyncio.create_task(
            ingest_tmdb(db, client, options, progress=crash_after_two_batches)
        )
        if interruption == "cancelled":
            await until_stored(db, 30)
            await asyncio.sleep(0.3)  # somewhere inside a later batch
            task.cancel()
        with pytest.raises((asyncio.CancelledError, RuntimeError)):
            await task
    before = await db[MOVIES].count_documents({})
    assert 0 < before < 150
    run = await only_run(db)
    assert run["status"] == "failed" and run["current"] is not None

    async with tmdb(base_url, rate_limit=80) as client:
        summary = await ingest_tmdb(db, client, options)
    elapsed = time.monotonic() - started
    assert summary.resumed and summary.run_id == run["_id"] and summary.status == "done"
    await assert_exactly_once(db, set(fake.films))
    assert summary.inserted == 150 - before
    # Only the batch in flight when interrupted may have been fetched twice.
    assert sum(fake.detail_hits.values()) <= 150 + options.batch_size
    assert fake.stats["429"] > 0 and fake.stats["503"] > 0
    assert summary.retries > 0
    print(
        f"\n[{interruption}] {fake.stats['requests']} requests, {fake.stats['429']} x 429, "
        f"{fake.stats['503']} x 503, resumed at {before}/150 films, {elapsed:.1f}s"
    )


def cli_env(mongodb_uri: str, db_name: str, base_url: str, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TMDB_", "MONGODB_", "APP_"))}
    env.update(
        MONGODB_URI=mongodb_uri,
        MONGODB_DB=db_name,
        TMDB_API_BASE_URL=base_url,
        TMDB_RATE_LIMIT="80",
        APP_ENV="test",
    )
    if token is not None:
        env["TMDB_API_TOKEN"] = token
    return env


async def test_acceptance_cli_killed_mid_run_then_rerun(
    db: AsyncDatabase[Document], serve: Any, mongodb_uri: str, tmp_path: Path
) -> None:
    fake = flaky_tmdb()
    base_url = serve(fake)
    env = cli_env(mongodb_uri, db.name, base_url, TOKEN)
    command = [str(CLI), "ingest", "tmdb"]
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    t0 = time.monotonic()
    try:
        await until_stored(db, 40, process)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert (await only_run(db))["status"] == "running"  # killed: it could not say otherwise

    rerun = await asyncio.to_thread(
        subprocess.run, command, env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed run" in rerun.stdout and "done" in rerun.stdout
    await assert_exactly_once(db, set(fake.films))
    run = await only_run(db)
    assert run["invocations"] == 2 and run["status"] == "done"
    print(
        f"\n[killed] {fake.stats['requests']} requests, {fake.stats['429']} x 429, "
        f"{fake.stats['503']} x 503, {run['counts']}, {time.monotonic() - t0:.1f}s"
    )


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "TMDB_API_TOKEN is not set"), ("wrong", "TMDB_API_TOKEN rejected")],
)
async def test_cli_missing_or_rejected_token_exits_1_with_a_clear_message(
    db: AsyncDatabase[Document],
    serve: Any,
    mongodb_uri: str,
    tmp_path: Path,
    token: str | None,
    message: str,
) -> None:
    base_url = serve(FakeTmdb(catalogue({2000: 2}), rate_limit=None))
    done = await asyncio.to_thread(
        subprocess.run,
        [str(CLI), "ingest", "tmdb", "--max-movies", "5"],
        env=cli_env(mongodb_uri, db.name, base_url, token),
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert message in " ".join(done.stderr.split())


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "ingest", "tmdb", *args], env=env, cwd=cwd, capture_output=True, text=True
    )


async def test_cli_incremental_needs_a_previous_sync_then_remembers_it(
    db: AsyncDatabase[Document], serve: Any, mongodb_uri: str, tmp_path: Path
) -> None:
    fake = FakeTmdb(catalogue({2000: 4}), rate_limit=None)
    env = cli_env(mongodb_uri, db.name, serve(fake), TOKEN)
    refused = await asyncio.to_thread(run_cli, env, tmp_path, "--incremental")
    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert "no successful TMDB sync" in message and "full sync" in message and "--since" in message

    assert (await asyncio.to_thread(run_cli, env, tmp_path)).returncode == 0
    fake.change(101, datetime.now(UTC).date(), title="Edited today")
    done = await asyncio.to_thread(run_cli, env, tmp_path, "--incremental")
    assert done.returncode == 0, done.stderr
    output = " ".join((done.stdout + done.stderr).split())
    assert f"since {datetime.now(UTC).date()}" in output and "incremental" in output
    doc = await db[MOVIES].find_one({"_id": movie_key(101)})
    assert doc is not None and doc["title"] == "Edited today"


async def test_cli_ids_file_reports_malformed_lines_and_stores_every_film(
    db: AsyncDatabase[Document], serve: Any, mongodb_uri: str, tmp_path: Path
) -> None:
    films = catalogue({2003: 3}) + undated(2, first_id=400)
    fake = FakeTmdb(films, rate_limit=None)
    env = cli_env(mongodb_uri, db.name, serve(fake), TOKEN)
    path = id_export(tmp_path / "movie_ids_01_02_2026.json.gz", films, ["{oops"])
    done = await asyncio.to_thread(run_cli, env, tmp_path, "--ids-file", str(path))
    assert done.returncode == 0, done.stderr
    output = " ".join((done.stdout + done.stderr).split())
    assert "movie_ids_01_02_2026.json.gz line 6" in output
    await assert_exactly_once(db, set(fake.films))
    assert fake.stats["discover"] == 0

    clash = await asyncio.to_thread(
        run_cli, env, tmp_path, "--ids-file", str(path), "--since", "2024-01-01"
    )
    assert clash.returncode != 0 and "--ids-file" in " ".join(clash.stderr.split())


def test_a_since_date_in_the_future_is_a_usage_error_not_a_traceback() -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli_app

    result = CliRunner().invoke(cli_app, ["ingest", "tmdb", "--since", "2999-01-01"])
    assert result.exit_code == 2
    assert "--since" in result.output and "after today" in result.output
