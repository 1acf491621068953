"""Incremental refresh: the snapshot re-reads only the films the change log names, and the
result is the snapshot a full read builds, array for array.

* in memory, a property test: random catalogues and random changes (hypothesis);
* on the real local database: random write sequences through the service's own writers
  (inserts, updates, bulk updates that rewrite the collection, deletes, re-imports, the IMDB
  join), the engine catching up after each, compared with a full read;
* the change log's crash rules: an entry written but never finished, a hole in the sequence,
  entries pruned past a snapshot's mark, a writer slower than the staleness limit.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.models.movie import ImdbInfo, MovieDocument
from app.services import change_log, meta_repo
from app.services.analytics import AnalyticsEngine, Lineage, SnapshotBuilder, load_snapshot
from app.services.analytics.incremental import apply_changes
from app.services.movies_repo import update_one_by_one
from app.services.movies_rewrite import apply_updates
from app.services.movies_store import delete_movies, set_imdb, upsert_movies
from tests.snapshot_support import (
    COMPANIES,
    GENRES,
    PEOPLE,
    WORDS,
    answers,
    assert_same_snapshot,
    caught_up,
    random_film,
)

# --- in memory ------------------------------------------------------------------------------

NAMES = st.sampled_from([*PEOPLE, "", "x\x00y", "Zoë"])
DOCS = st.fixed_dictionaries(
    {
        "title": st.text(alphabet="abé c\x00ü", max_size=8),
        "genres": st.lists(st.sampled_from(GENRES), max_size=3),
        "production_companies": st.lists(st.sampled_from(COMPANIES), max_size=2),
        "original_language": st.sampled_from(["en", "fr", None, ""]),
        "budget": st.sampled_from([None, 1.0, 5.0, 5.0, 7.5]),
        "vote_count": st.sampled_from([None, 0, 3, 3]),
        "release_year": st.sampled_from([None, 1999, 2000]),
        "release_month": st.sampled_from([None, 1, 12]),
        "cast": st.lists(st.fixed_dictionaries({"name": NAMES}), max_size=3),
        "imdb": st.sampled_from([None, {"score": 7.0, "director": "Ann", "actors": ["Bob"]}]),
    }
)


def as_stored(movie_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    doc = {"id": movie_id, **fields}
    doc["title_normalized"] = str(fields["title"]).lower()
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.dictionaries(st.integers(1, 40), DOCS, max_size=25),
    changes=st.dictionaries(st.integers(1, 45), st.one_of(st.none(), DOCS), max_size=15),
)
def test_incremental_equals_full_in_memory(
    before: dict[int, dict[str, Any]], changes: dict[int, dict[str, Any] | None]
) -> None:
    """Any catalogue, any set of changes (None: deleted): applying the changes to the
    snapshot gives the snapshot of the changed catalogue."""
    builder = SnapshotBuilder()
    builder.add(as_stored(i, d) for i, d in before.items())
    base = builder.finish(1, 1, 0.0)
    after = {i: d for i, d in before.items() if i not in changes}
    after.update({i: d for i, d in changes.items() if d is not None})
    docs = [as_stored(i, d) for i, d in changes.items() if d is not None]
    got = apply_changes(base, changes, docs, version=2, build_id=2, lineage=Lineage())
    builder = SnapshotBuilder()
    builder.add(as_stored(i, d) for i, d in after.items())
    want = builder.finish(2, 3, 0.0)
    assert_same_snapshot(got, want)
    assert answers(got) == answers(want)


# --- on the database ------------------------------------------------------------------------


async def write_randomly(
    db: AsyncDatabase[Document], rng: random.Random, films: dict[int, MovieDocument]
) -> str:
    """One random write through the service's writers (`films`: what TMDB last said about
    each stored film); returns what it was."""
    kind = rng.choice(["insert", "update", "bulk", "delete", "reimport", "imdb", "fields"])
    if kind == "insert" or not films:
        kind = "insert"
        fresh = [random_film(rng, max(films, default=0) + k) for k in range(1, rng.randint(2, 6))]
    elif kind == "bulk":  # past REWRITE_THRESHOLD: FerretDB rewrites the collection
        fresh = [random_film(rng, i) for i in rng.sample(sorted(films), min(len(films), 30))]
    elif kind == "reimport":  # the same films again (unchanged), one changed and one new
        fresh = [films[i] for i in rng.sample(sorted(films), min(len(films), 5))]
        fresh += [random_film(rng, rng.choice(sorted(films))), random_film(rng, max(films) + 1)]
    else:
        some = rng.sample(sorted(films), min(len(films), rng.randint(1, 4)))
        if kind == "update":
            fresh = [random_film(rng, i) for i in some]
        elif kind == "delete":
            await delete_movies(db, [*some, 10_000])  # an unknown id too
            for i in some:
                del films[i]
            return kind
        elif kind == "imdb":
            people = rng.sample(PEOPLE, 3)
            info = ImdbInfo(director=people[0], actors=people[1:], score=6.5)
            await set_imdb(db, dict.fromkeys(some, info))
            return kind
        else:  # a direct bulk update of fields, logged like the rest
            await apply_updates(db, {i: {"title": rng.choice(WORDS)} for i in some})
            return kind
    await upsert_movies(db, fresh)
    films.update({f.id: f for f in fresh})
    return kind


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_incremental_equals_full_after_random_writes(
    db: AsyncDatabase[Document], seed: int
) -> None:
    rng = random.Random(seed)
    films = {i: random_film(rng, i) for i in range(1, 41)}
    await upsert_movies(db, list(films.values()))
    engine = AnalyticsEngine(db, check_seconds=0)
    engine.start()
    try:
        first = await caught_up(engine, db)
        assert first.lineage.source == "full"
        kinds = []
        for _ in range(12):
            kinds.append(await write_randomly(db, rng, films))
            inc = await caught_up(engine, db)
            assert inc.lineage.source == "incremental", kinds
            full = await load_snapshot(db)
            assert_same_snapshot(inc, full)
            assert answers(inc) == answers(full)
            assert inc.ids.tolist() == sorted(films)
            assert inc.lineage.changes_seq == full.lineage.changes_seq
    finally:
        await engine.close()


async def test_unchanged_reimport_logs_nothing(db: AsyncDatabase[Document]) -> None:
    rng = random.Random(7)
    films = [random_film(rng, i) for i in range(1, 6)]
    await upsert_movies(db, films)
    seq = (await meta_repo.catalogue_state(db)).changes_seq
    assert (await upsert_movies(db, films)).unchanged == 5
    assert (await meta_repo.catalogue_state(db)).changes_seq == seq


# --- crash rules of the change log ----------------------------------------------------------


async def test_a_writer_that_died_mid_write_is_reconciled(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry logged, films written, never marked done nor the version bumped: the
    snapshot keeps re-reading those films while the entry is fresh, and once it is stale it
    is settled and the version bumped, so every process sees what the writer wrote."""
    rng = random.Random(3)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 11)])
    monkeypatch.setattr("app.services.analytics.engine.RECHECK_SECONDS", 0.0)
    engine = AnalyticsEngine(db, check_seconds=0)
    engine.start()
    try:
        before = await caught_up(engine, db)
        ticket = await change_log.begin(db, [3, 4])  # the writer that will die
        await update_one_by_one(db, {3: {"title": "Half Written"}})
        await upsert_movies(db, [random_film(rng, 11)])  # someone else's write: a refresh
        snap = await caught_up(engine, db)
        assert snap.lineage.unsettled and snap.lineage.changes_seq == ticket.seq - 1
        assert snap.titles[snap.row_of(3) or 0] == "Half Written"
        await update_one_by_one(db, {4: {"title": "Written Late"}})  # then it died
        version = await meta_repo.get_data_version(db)
        # Fresh and pending: looked at again, but nothing changes under the same version.
        await engine.snapshot()
        assert (await engine.settled()) is snap
        assert await meta_repo.get_data_version(db) == version
        # Stale: settled, the version bumped, the late write caught up.
        monkeypatch.setattr(change_log, "STALE_SECONDS", 0.0)
        await engine.snapshot()
        await engine.settled()
        assert await meta_repo.get_data_version(db) == version + 1
        final = await caught_up(engine, db)
        assert final.titles[final.row_of(4) or 0] == "Written Late"
        last = (await meta_repo.catalogue_state(db)).changes_seq
        assert not final.lineage.unsettled and final.lineage.changes_seq == last > ticket.seq
        assert_same_snapshot(final, await load_snapshot(db))
        assert before.version < final.version
    finally:
        await engine.close()


async def test_a_hole_in_the_sequence_settles_when_stale(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sequence number given out but never written (the writer died in between) holds
    the mark back until it is stale, then is passed over."""
    await upsert_movies(db, [random_film(random.Random(1), 1)])
    hole = await meta_repo.next_change_seq(db)
    await upsert_movies(db, [random_film(random.Random(2), 2)])
    holes = change_log.Holes()
    state = await meta_repo.catalogue_state(db)
    catch = await change_log.catchup(db, 0, state.changes_seq, holes)
    assert catch.settled_through == hole - 1 and catch.unsettled
    assert catch.ids == {1, 2}
    monkeypatch.setattr(change_log, "STALE_SECONDS", 0.0)
    catch = await change_log.catchup(db, 0, state.changes_seq, holes)
    assert catch.settled_through == state.changes_seq and not catch.unsettled


async def test_entries_pruned_past_the_mark_mean_a_full_read(
    db: AsyncDatabase[Document],
) -> None:
    rng = random.Random(5)
    await upsert_movies(db, [random_film(rng, i) for i in range(1, 6)])
    engine = AnalyticsEngine(db, check_seconds=0)
    engine.start()
    try:
        await caught_up(engine, db)
        await upsert_movies(db, [random_film(rng, 6)])
        pruned = await change_log.prune(db, keep_seconds=0.0)
        assert pruned == (await meta_repo.catalogue_state(db)).changes_pruned > 0
        assert await change_log.entries_between(db, 0, pruned) == []
        snap = await caught_up(engine, db)
        assert snap.lineage.source == "full" and snap.size == 6
        await upsert_movies(db, [random_film(rng, 7)])  # the log goes on from there
        assert (await caught_up(engine, db)).lineage.source == "incremental"
    finally:
        await engine.close()


async def test_a_slow_writer_logs_its_films_again(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer slower than half the staleness limit (readers may have settled its entry)
    logs its films again when it finishes."""
    monkeypatch.setattr(change_log, "STALE_SECONDS", 0.0)
    await upsert_movies(db, [random_film(random.Random(1), 1)])
    entries = await change_log.entries_between(db, 0, 10)
    assert [(e.ids, e.done) for e in entries] == [((1,), True), ((1,), True)]


async def test_writes_record_the_films_they_change(db: AsyncDatabase[Document]) -> None:
    rng = random.Random(9)
    await upsert_movies(db, [random_film(rng, i) for i in (1, 2, 3)])
    await set_imdb(db, {2: ImdbInfo(score=7.5)})
    await delete_movies(db, [3, 99])
    await apply_updates(db, {1: {"title": "New"}})
    entries = await change_log.entries_between(db, 0, 10)
    assert [e.ids for e in entries] == [(1, 2, 3), (2,), (3, 99), (1,)]
    assert all(e.done and not e.everything for e in entries)
