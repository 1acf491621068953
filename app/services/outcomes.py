"""Outcomes: the actual worldwide revenue of predicted films, once known. The only module that
reads or writes `outcomes` (one document per film, `_id` = its TMDB id as a string: `id`,
`revenue`, `source`, `by`, `first_at`, `updated_at`).

Keyed by the film, so an outcome arriving twice (a catalogue imported twice, a partner posting
again) is one outcome: live accuracy joins each film's predictions to it exactly once. Two
ways in: `POST /v1/predictions/outcomes` (`record`), and every import or ingest that writes
films (`record_from_catalogue`, called by `app.services.movies_store`), which keeps the
revenues of the films some logged prediction names and leaves the rest of the catalogue out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services import prediction_log

OUTCOMES = "outcomes"


@dataclass(frozen=True, slots=True)
class Recorded:
    recorded: int
    new: int


def _key(film_id: int) -> str:
    return str(film_id)


async def record(
    db: AsyncDatabase[Document], revenues: Mapping[int, float], source: str, by: str | None
) -> Recorded:
    """Upsert the outcome of each film (the latest figure wins)."""
    if not revenues:
        return Recorded(0, 0)
    now = datetime.now(UTC)
    result = await db[OUTCOMES].bulk_write(
        [
            UpdateOne(
                {"_id": _key(film_id)},
                {
                    "$set": {
                        "id": int(film_id),
                        "revenue": float(revenue),
                        "source": source,
                        "by": by,
                        "updated_at": now,
                    },
                    "$setOnInsert": {"first_at": now},
                },
                upsert=True,
            )
            for film_id, revenue in revenues.items()
        ],
        ordered=False,
    )
    return Recorded(recorded=len(revenues), new=result.upserted_count)


async def record_from_catalogue(
    db: AsyncDatabase[Document], revenues: Mapping[int, float | None]
) -> int:
    """Keep the known revenues of written films that a logged prediction names; how many."""
    known = {i: r for i, r in revenues.items() if r is not None and r > 0}
    if not known:
        return 0
    predicted = await prediction_log.predicted_among(db, known)
    if not predicted:
        return 0
    await record(db, {i: known[i] for i in predicted}, "catalogue", None)
    return len(predicted)


async def read(db: AsyncDatabase[Document], ids: Iterable[int] | None = None) -> dict[int, float]:
    """{id: revenue} of every known outcome (or of `ids` among them)."""
    wanted = None if ids is None else {int(i) for i in ids}
    cursor = db[OUTCOMES].find({}, {"_id": 0, "id": 1, "revenue": 1})
    return {
        int(doc["id"]): float(doc["revenue"])
        async for doc in cursor
        if wanted is None or int(doc["id"]) in wanted
    }
