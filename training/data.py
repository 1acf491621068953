"""Where training films come from: the `movies` collection (the normal path) or a TMDB
5000-format CSV, optionally joined with the IMDB 5000 file exactly as the importer does."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.db import open_db
from app.ml.features import film_record
from app.services.csv_io import ImdbReport, iter_tmdb_csv, read_imdb_csv
from app.services.movies_repo import scan
from app.services.normalize import RecordError, normalize_title, to_mongo, to_movie
from app.settings import Settings

# Everything a pre-release feature or a target needs, and nothing else: FerretDB pays per
# byte of every scanned document, so one scan with a projection (~0.3 ms/film) is the budget.
PROJECTION: dict[str, Any] = {
    "_id": 0,
    "id": 1,
    "title": 1,
    "title_normalized": 1,
    "budget": 1,
    "revenue": 1,
    "runtime": 1,
    "release_date": 1,
    "genres": 1,
    "original_language": 1,
    "production_companies": 1,
    "production_countries": 1,
    "spoken_languages": 1,
    "keywords": 1,
    "homepage": 1,
    "tagline": 1,
    "overview": 1,
    "belongs_to_collection": 1,
    "cast": 1,
    "crew": 1,
    "imdb.director": 1,
    "imdb.actors": 1,
    "imdb.content_rating": 1,
    # Outcomes of the engagement model (training/engagement.py), never features.
    "vote_count": 1,
    "vote_average": 1,
}


@dataclass
class Dataset:
    """Canonical records (see `app.ml.features.film_record`) plus what the card reports."""

    records: list[dict[str, Any]]
    source: str
    duplicates_dropped: int = 0
    rejected_rows: int = 0

    @property
    def size(self) -> int:
        return len(self.records)

    def content_hash(self) -> str:
        """sha256 of the canonical records, so the card pins exactly what was learnt from
        (identical whether the films came from the database or the CSV)."""
        digest = hashlib.sha256()
        for rec in sorted(self.records, key=lambda r: int(r["id"])):
            blob = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            digest.update(blob.encode())
        return digest.hexdigest()


def _canonical(docs: list[dict[str, Any]], source: str, rejected: int = 0) -> Dataset:
    """Keep one film per (normalized title, year): the source has duplicated titles under
    different ids, and a copy on each side of the train/test split would leak."""
    seen: set[tuple[str, str | None]] = set()
    records: list[dict[str, Any]] = []
    dropped = 0
    for doc in sorted(docs, key=lambda d: int(d["id"])):
        rec = film_record(doc)
        key = (
            str(doc.get("title_normalized") or normalize_title(rec["title"])),
            rec["release_date"],
        )
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        rec["id"] = int(doc["id"])
        # Engagement targets travel with the record like `revenue`; no feature reads them.
        rec["vote_count"] = doc.get("vote_count")
        rec["vote_average"] = doc.get("vote_average")
        records.append(rec)
    return Dataset(
        records=records, source=source, duplicates_dropped=dropped, rejected_rows=rejected
    )


async def load_from_db(settings: Settings) -> Dataset:
    """Read every film once, with a projection, from database `MONGODB_DB`."""
    async with open_db(settings) as db:
        docs = [doc async for doc in scan(db, PROJECTION, batch_size=2000)]
    return _canonical(docs, f"mongodb:{settings.mongodb_db}")


def load_from_csv(path: Path, imdb_path: Path | None = None) -> Dataset:
    """Read a TMDB 5000-format CSV through the importer's cleaning (same rules as the
    database path), joining IMDB directors/actors on normalized title + year when given."""
    docs: list[dict[str, Any]] = []
    rejected = 0
    for _line, row, error in iter_tmdb_csv(path):
        if row is None or error:
            rejected += 1
            continue
        try:
            movie = to_movie(row, "tmdb-csv")
        except (RecordError, ValidationError, ValueError):
            rejected += 1
            continue
        doc = to_mongo(movie)
        if row.get("imdb"):  # our own export carries the enrichment in a JSON column
            with contextlib.suppress(json.JSONDecodeError):
                doc["imdb"] = json.loads(row["imdb"])
        docs.append(doc)
    if imdb_path is not None:
        facts = read_imdb_csv(imdb_path, ImdbReport())
        for doc in docs:
            year = doc.get("release_year")
            if year is None or doc.get("imdb"):
                continue
            keys = [doc["title_normalized"]]
            if doc.get("original_title"):
                keys.append(normalize_title(doc["original_title"]))
            for key in keys:
                info = facts.get((key, int(year)))
                if info is not None:
                    doc["imdb"] = info.model_dump(mode="json")
                    break
    return _canonical(
        docs, f"csv:{path.name}" + (f"+{imdb_path.name}" if imdb_path else ""), rejected
    )
