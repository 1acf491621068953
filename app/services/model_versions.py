"""The active version of each model, kept in the database (`model_versions`, one document per
model: `_id` = model name) so that every worker and replica serves the same one (DESIGN: "One
model version everywhere"). The only module that reads or writes `model_versions`.

`seq` grows with every activation, so that a re-activation of the same version is a change
too (a worker that failed to load it tries again at once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from app.db import Document

MODEL_VERSIONS = "model_versions"


@dataclass(frozen=True, slots=True)
class ActiveRecord:
    """Which version of a model serves, who made it so and when."""

    name: str
    version: str
    seq: int
    activated_by: str
    activated_at: datetime
    source: str  # activate | reload | training | seed (a first process's ACTIVE file)


def _record(doc: Document) -> ActiveRecord:
    return ActiveRecord(
        name=str(doc["_id"]),
        version=str(doc["version"]),
        seq=int(doc.get("seq", 0)),
        activated_by=str(doc.get("activated_by", "")),
        activated_at=doc.get("activated_at") or datetime.fromtimestamp(0, UTC),
        source=str(doc.get("source", "")),
    )


async def read_all(db: AsyncDatabase[Document], names: Iterable[str]) -> dict[str, ActiveRecord]:
    """One query for every model: the cheap check each worker runs every few seconds."""
    cursor = db[MODEL_VERSIONS].find({"_id": {"$in": list(names)}})
    return {str(doc["_id"]): _record(doc) async for doc in cursor}


async def read(db: AsyncDatabase[Document], name: str) -> ActiveRecord | None:
    doc = await db[MODEL_VERSIONS].find_one({"_id": name})
    return _record(doc) if doc else None


async def record(
    db: AsyncDatabase[Document], name: str, version: str, by: str, source: str
) -> ActiveRecord:
    """Make `version` the active one everywhere (callers check it can serve first)."""
    doc = await db[MODEL_VERSIONS].find_one_and_update(
        {"_id": name},
        {"$set": _fields(version, by, source), "$inc": {"seq": 1}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    assert doc is not None  # upsert=True with AFTER always returns the document
    return _record(doc)


async def seed(db: AsyncDatabase[Document], name: str, version: str, by: str) -> ActiveRecord:
    """Record `version` only if nothing is recorded yet; the record that holds either way."""
    try:
        doc = await db[MODEL_VERSIONS].find_one_and_update(
            {"_id": name},
            {"$setOnInsert": {**_fields(version, by, "seed"), "seq": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:  # another process seeded it at the same moment
        doc = None
    found = doc or await db[MODEL_VERSIONS].find_one({"_id": name})
    assert found is not None
    return _record(found)


def _fields(version: str, by: str, source: str) -> dict[str, Any]:
    return {
        "version": version,
        "activated_by": by,
        "activated_at": datetime.now(UTC),
        "source": source,
    }
