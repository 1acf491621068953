"""Single-document writes on the local FerretDB are atomic, as on MongoDB.

FerretDB v1 runs `update`, `findAndModify` and `delete` as a read of the matching documents
followed by a write by `_id`, with nothing held in between, so concurrent commands on one
collection interleaved: `$inc` lost increments, and a delete filtered on an expired lease
removed the fresh lease another process had just put in its place, so two processes held
the films write lock at once (seen as a rare E11000 when two services started together).
`tools/ferretdb/patches/0002-*` serializes those commands per collection. Each test below
races several clients, as separate processes would, and failed on most runs before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services import meta_repo
from app.services.meta_repo import META, WRITE_LOCK

CLIENTS = 4


@pytest.fixture
async def views(
    mongodb_uri: str, db: AsyncDatabase[Document]
) -> AsyncIterator[list[AsyncDatabase[Document]]]:
    """The test's database through separate clients, as separate processes see it."""
    clients = [AsyncMongoClient[Document](mongodb_uri, tz_aware=True) for _ in range(CLIENTS)]
    try:
        yield [client[db.name] for client in clients]
    finally:
        for client in clients:
            await client.close()


async def test_concurrent_increments_are_never_lost(
    views: list[AsyncDatabase[Document]],
) -> None:
    # The counter does not exist yet: the first increments race to create it too.
    async def fifty(view: AsyncDatabase[Document]) -> list[int]:
        return [await meta_repo.next_change_seq(view) for _ in range(50)]

    given = [seq for seqs in await asyncio.gather(*map(fifty, views)) for seq in seqs]
    assert sorted(given) == list(range(1, 50 * CLIENTS + 1))


async def test_one_process_takes_over_an_expired_lease(
    db: AsyncDatabase[Document], views: list[AsyncDatabase[Document]]
) -> None:
    for _ in range(40):
        await db[META].delete_many({"_id": WRITE_LOCK})
        expired = datetime.now(UTC) - timedelta(seconds=1)
        await db[META].insert_one({"_id": WRITE_LOCK, "owner": "killed", "until": expired})
        now = datetime.now(UTC)
        taken = await asyncio.gather(
            *(
                meta_repo.take_lock(view, f"owner{i}", now, now + timedelta(minutes=1))
                for i, view in enumerate(views)
            )
        )
        assert sum(taken) == 1, f"{sum(taken)} processes hold the lock"
        holder = await meta_repo.lock_holder(db)
        assert holder == f"owner{taken.index(True)}"


async def test_one_process_runs_a_due_job(
    db: AsyncDatabase[Document], views: list[AsyncDatabase[Document]]
) -> None:
    for _ in range(30):
        due = datetime.now(UTC) - timedelta(hours=1)
        await db[META].replace_one({"_id": "job:prune"}, {"at": due}, upsert=True)
        claimed = await asyncio.gather(
            *(
                meta_repo.claim_job(view, "prune", timedelta(minutes=5), f"p{i}")
                for i, view in enumerate(views)
            )
        )
        assert sum(claimed) == 1
