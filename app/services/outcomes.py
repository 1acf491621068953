"""Outcomes: what predicted films actually did, once known: worldwide revenue, and the TMDB
votes and rating they reached. The only module that reads or writes `outcomes` (one document
per film, `_id` = its TMDB id as a string: `id`, `revenue`, `vote_count`, `vote_average`,
`source`, `by`, `first_at`, `updated_at`; a figure not known yet is absent).

Keyed by the film, so an outcome arriving twice (a catalogue imported twice, a partner posting
again) is one outcome: live accuracy joins each film's predictions to it exactly once. Two
ways in: `POST /v1/predictions/outcomes` (`record`), and every import or ingest that writes
films (`record_from_catalogue`, called by `app.services.movies_store`), which keeps the
figures of the films some logged prediction names and leaves the rest of the catalogue out.
Votes keep growing after release, so the latest figure wins and an early one understates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services import prediction_log

OUTCOMES = "outcomes"


FIGURES = ("revenue", "vote_count", "vote_average")
Figures = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Recorded:
    recorded: int
    new: int


def _key(film_id: int) -> str:
    return str(film_id)


async def record(
    db: AsyncDatabase[Document],
    figures: Mapping[int, Figures],
    source: str,
    by: str | None,
    only_new: Iterable[int] = (),
) -> Recorded:
    """Upsert the known figures of each film (the latest of each wins; others are kept).
    The films in `only_new` are recorded only when they have no outcome yet."""
    wanted = {i: f for i, f in figures.items() if any(k in f for k in FIGURES)}
    if not wanted:
        return Recorded(0, 0)
    keep = {int(i) for i in only_new}
    now = datetime.now(UTC)

    def update(film_id: int, known: Figures) -> Document:
        fields = {
            "id": int(film_id),
            **{k: float(known[k]) for k in FIGURES if k in known},
            "source": source,
            "by": by,
            "updated_at": now,
        }
        if int(film_id) in keep:
            return {"$setOnInsert": {**fields, "first_at": now}}
        return {"$set": fields, "$setOnInsert": {"first_at": now}}

    result = await db[OUTCOMES].bulk_write(
        [
            UpdateOne({"_id": _key(film_id)}, update(film_id, known), upsert=True)
            for film_id, known in wanted.items()
        ],
        ordered=False,
    )
    return Recorded(recorded=len(wanted), new=result.upserted_count)


def catalogue_figures(film: Mapping[str, Any], today: date) -> dict[str, float]:
    """What a catalogue record tells of a film's outcome: a positive revenue; votes and rating
    once it is released and has been voted on (before that TMDB shows zeros, not outcomes)."""
    out: dict[str, float] = {}
    revenue = film.get("revenue")
    if isinstance(revenue, int | float) and revenue > 0:
        out["revenue"] = float(revenue)
    released_day = _day(film.get("release_date"))
    votes = film.get("vote_count")
    if (
        isinstance(released_day, date)
        and released_day <= today
        and isinstance(votes, int | float)
        and votes > 0
    ):
        out["vote_count"] = float(votes)
        rating = film.get("vote_average")
        if isinstance(rating, int | float) and 0 <= rating <= 10:
            out["vote_average"] = float(rating)
    return out


def _day(value: Any) -> date | None:
    """A release date as stored (an ISO string) or as a date or datetime."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


async def record_from_catalogue(
    db: AsyncDatabase[Document],
    films: Mapping[int, Mapping[str, Any]],
    unchanged: Iterable[int] = (),
) -> int:
    """Keep the known figures of written films that a logged prediction names; how many.
    An `unchanged` film (written before with the same facts) fills in a missing outcome but
    never replaces one: re-importing the same catalogue must not undo a figure a partner
    posted since."""
    today = datetime.now(UTC).date()
    known = {i: f for i, film in films.items() if (f := catalogue_figures(film, today))}
    if not known:
        return 0
    predicted = await prediction_log.predicted_among(db, known)
    if not predicted:
        return 0
    await record(db, {i: known[i] for i in predicted}, "catalogue", None, unchanged)
    return len(predicted)


async def read(
    db: AsyncDatabase[Document], ids: Iterable[int] | None = None
) -> dict[int, dict[str, float]]:
    """{id: {figure: value}} of every known outcome (or of `ids` among them)."""
    wanted = None if ids is None else {int(i) for i in ids}
    cursor = db[OUTCOMES].find({}, {"_id": 0, "id": 1, **dict.fromkeys(FIGURES, 1)})
    return {
        int(doc["id"]): {k: float(doc[k]) for k in FIGURES if doc.get(k) is not None}
        async for doc in cursor
        if wanted is None or int(doc["id"]) in wanted
    }
