"""The prediction log's storage: chunks of predictions, read back as the predictions they hold,
alongside documents of the older one-per-prediction shape; retries write a batch once."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import AutoReconnect

from app.db import Document
from app.services import prediction_log
from app.services.prediction_log import LogContext, PredictionLogWriter, Slab, entries

START = datetime(2026, 11, 1, tzinfo=UTC)


def predictions(
    ids: list[int | None], *, version: str = "v1", at: datetime = START, model: str = "revenue"
) -> list[Document]:
    rng = random.Random(sum(i or 0 for i in ids))
    inputs = [
        {
            "budget": round(rng.uniform(1e5, 3e8), 2),
            "runtime": None if k % 3 == 0 else rng.uniform(80, 180),
            "has_homepage": k % 2,
            "genres": ["Drama", "Crime"][: k % 3],
            "original_language": "en" if k % 4 else None,
        }
        for k in range(len(ids))
    ]
    outputs = [{"score": rng.gauss(16, 2), "revenue": rng.uniform(1, 1e9)} for _ in ids]
    return entries(model, version, LogContext("req-1", "key:abc"), ids, inputs, outputs, at=at)


def without_ids(films: list[Document]) -> list[Document]:
    return [{k: v for k, v in film.items() if k != "_id"} for film in films]


def at_ms(moment: datetime) -> datetime:
    """What a BSON date keeps of a time (milliseconds)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_a_chunk_holds_the_predictions_it_was_made_of() -> None:
    """Packing groups by model version (the first prediction's `_id` names each chunk) and
    unpacking gives every prediction back: its own time (to the millisecond), id, who asked,
    inputs and output, unknown values as None."""
    first = predictions([1, None, 3], at=START + timedelta(microseconds=123_456))
    other = predictions([4], version="v2", at=START + timedelta(seconds=5))
    later = predictions([5, 6], at=START + timedelta(minutes=1))
    chunks = prediction_log.pack([*first, *other, *later])
    assert [c["_id"] for c in chunks] == [first[0]["_id"], other[0]["_id"]]
    assert [(c["version"], c["n"], c["ids"]) for c in chunks] == [
        ("v1", 5, [1, 3, 5, 6]),
        ("v2", 1, [4]),
    ]
    assert chunks[0]["at"] == first[0]["at"] and chunks[0]["last_at"] == later[0]["at"]
    back = [film for chunk in chunks for film in prediction_log.unpack(chunk)]
    expected = [*first, *later, *other]
    for film in expected:
        film["at"] = at_ms(film["at"])
    assert back == without_ids(expected)


def test_predictions_of_different_shapes_share_a_chunk() -> None:
    """Rows with the same fields are packed column by column at once; a chunk whose rows
    differ (an input missing, an output another way round, no inputs at all) keeps each
    row's own fields, and missing ones come back as None."""
    films = predictions([1, 2, 3, 4])
    films[1]["inputs"] = {k: v for k, v in films[1]["inputs"].items() if k != "runtime"}
    films[2]["output"] = dict(reversed(films[2]["output"].items()))
    films[3]["inputs"] = None
    back = prediction_log.unpack(prediction_log.pack(films)[0])
    assert [film["output"] for film in back] == [film["output"] for film in films]
    assert back[1]["inputs"] == films[1]["inputs"] | {"runtime": None}
    assert back[3]["inputs"] == dict.fromkeys(films[0]["inputs"])
    assert [film["inputs"] for film in back[:1]] == [films[0]["inputs"]]


def test_an_older_shape_document_is_one_prediction() -> None:
    (doc,) = predictions([7])
    assert prediction_log.unpack(doc) == [doc]


async def test_chunks_and_older_documents_are_read_counted_and_pruned_together(
    db: AsyncDatabase[Document],
) -> None:
    """A log written before chunks (one document per prediction) and after: the readers give
    the predictions in the window from both, and pruning takes what is past retention."""
    old_shape = predictions([1, 2], at=START)
    await db[prediction_log.PREDICTION_LOG].insert_many(old_shape)
    spread = [
        *predictions([3], at=START + timedelta(hours=1)),
        *predictions([4], at=START + timedelta(hours=2)),
        *predictions([None], at=START + timedelta(hours=2, minutes=1)),
        *predictions([5], at=START + timedelta(hours=3)),
    ]
    await prediction_log._insert(db, Slab.of_documents(spread))
    await prediction_log._insert(db, Slab.of_documents(predictions([6], model="hit", at=START)))

    assert await prediction_log.count(db, "revenue") == 6
    assert await prediction_log.count(db) == 7
    window = (START + timedelta(minutes=30), START + timedelta(hours=2, minutes=30))
    inside = await prediction_log.logged_films(db, "revenue", since=window[0], until=window[1])
    assert [f["id"] for f in inside] == [3, 4, None]
    newest = await prediction_log.read_inputs(db, "revenue", "v1", None, None, limit=3)
    assert [f["inputs"]["budget"] for f in newest] == [
        f["inputs"]["budget"] for f in reversed(spread[1:])
    ]
    assert newest[0]["output"] == {"score": spread[-1]["output"]["score"]}
    everything = await prediction_log.read_inputs(db, "revenue", "v1", None, None, limit=100)
    assert len(everything) == 6
    named_newest = await prediction_log.newest_films(db, "revenue", 10, ids=[1, 4, 6])
    assert [(f["id"], f["at"]) for f in named_newest] == [
        (4, START + timedelta(hours=2)),
        (1, START),
    ]

    named = await prediction_log.read_identified(db, "revenue", [1, 4, 5, 99], None, window[1])
    assert [(f["id"], f["at"]) for f in named] == [
        (1, START),
        (4, START + timedelta(hours=2)),
    ]
    assert named[1]["inputs"] == spread[1]["inputs"]

    # Pruning at 2h30: the old-shape documents and the hit chunk go; the revenue chunk's last
    # prediction is at 3h, so it stays whole.
    removed = await prediction_log.prune(db, START + timedelta(hours=2, minutes=30))
    assert removed == 3
    assert await prediction_log.count(db) == 4
    assert await prediction_log.prune(db, START + timedelta(hours=4)) == 4
    assert await prediction_log.count(db) == 0


async def test_a_batch_whose_answer_was_lost_is_written_once_even_as_more_arrive(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database wrote the batch but the answer was lost: the writer retries the same
    predictions (films that arrived meanwhile wait for the next batch), the chunk's `_id` makes
    the retry a no-op, and nothing is lost or doubled."""
    insert = prediction_log._insert
    attempts: list[int] = []

    async def lost_answer(database: AsyncDatabase[Document], batch: list[Slab]) -> None:
        attempts.append(sum(map(len, batch)))
        await insert(database, batch)
        if len(attempts) == 1:
            writer.submit(predictions([30, 31, 32], at=START + timedelta(seconds=1)))
            raise AutoReconnect("connection closed before the answer")

    monkeypatch.setattr(prediction_log, "_insert", lost_answer)
    writer = PredictionLogWriter(db, flush_seconds=0.05)
    writer.submit(predictions([10, 11]))
    await writer.start()
    assert await writer.flush(timeout=30)
    await writer.close()
    assert attempts[:2] == [2, 2]
    assert writer.stats("revenue")["written"] == 5
    films = await prediction_log.logged_films(db, "revenue")
    assert sorted(f["id"] for f in films) == [10, 11, 30, 31, 32]


async def test_a_prediction_json_cannot_hold_is_dropped_and_the_rest_written(
    db: AsyncDatabase[Document],
) -> None:
    writer = PredictionLogWriter(db, flush_seconds=0.05)
    odd: list[Document] = predictions([2**70])
    writer.submit([*predictions([1]), *odd, *predictions([2])])
    await writer.start()
    assert await writer.flush(timeout=30)
    await writer.close()
    stats: dict[str, Any] = writer.stats("revenue")
    assert (stats["written"], stats["dropped"]) == (2, 1)
    assert [f["id"] for f in await prediction_log.logged_films(db, "revenue")] == [1, 2]


async def test_a_request_bigger_than_a_batch_is_split_and_each_part_written_once(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven predictions of one request, batches of three: the writer splits them where the
    batches end; a part whose answer was lost is retried as the same chunk (same `_id`),
    so every prediction is stored once, in order."""
    insert = prediction_log._insert
    attempts: list[list[int | None]] = []

    async def second_answer_lost(database: AsyncDatabase[Document], batch: list[Slab]) -> None:
        attempts.append([film_id for slab in batch for film_id in slab.ids])
        await insert(database, batch)
        if len(attempts) == 2:
            raise AutoReconnect("connection closed before the answer")

    monkeypatch.setattr(prediction_log, "_insert", second_answer_lost)
    writer = PredictionLogWriter(db, flush_seconds=0.05, batch_size=3)
    films = predictions(list(range(1, 8)))
    writer.submit(films)
    await writer.start()
    assert await writer.flush(timeout=30)
    await writer.close()
    assert attempts == [[1, 2, 3], [4, 5, 6], [4, 5, 6], [7]]
    stored = await db[prediction_log.PREDICTION_LOG].find({}, sort=[("at", 1)]).to_list()
    assert [c["n"] for c in stored] == [3, 3, 1]
    assert stored[0]["_id"] == films[0]["_id"]
    assert writer.stats("revenue")["written"] == 7
    back = await prediction_log.logged_films(db, "revenue")
    assert sorted(f["id"] for f in back) == list(range(1, 8))


async def test_a_dropped_prediction_is_counted_once_when_the_rest_must_be_retried(
    db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prediction no chunk can hold is dropped from the buffer itself: when writing the
    others fails and is retried, it is not found (and counted) again."""
    insert = prediction_log._insert
    failures = [AutoReconnect("database restarting")]

    async def flaky(database: AsyncDatabase[Document], batch: list[Slab]) -> None:
        await insert(database, batch)  # refuses the batch holding the odd prediction
        if failures:
            raise failures.pop()

    monkeypatch.setattr(prediction_log, "_insert", flaky)
    writer = PredictionLogWriter(db, flush_seconds=0.05)
    writer.submit([*predictions([1]), *predictions([2**70]), *predictions([2])])
    await writer.start()
    assert await writer.flush(timeout=30)
    await writer.close()
    stats: dict[str, Any] = writer.stats("revenue")
    assert (stats["written"], stats["dropped"], stats["buffered"]) == (2, 1, 0)
    assert sorted(f["id"] for f in await prediction_log.logged_films(db, "revenue")) == [1, 2]
