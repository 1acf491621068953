"""CSV import and export: the Kaggle TMDB 5000 format (the raw layer, re-importable) and the
IMDB 5000 enrichment joined onto films by normalized title + release year."""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.models.movie import ImdbInfo, MovieDocument
from app.services.movies_repo import scan
from app.services.movies_store import WriteSummary, existing_hashes, set_imdb, upsert_movies
from app.services.normalize import RecordError, normalize_title, to_movie

Progress = Callable[[int], None]
BATCH_SIZE = 500
TMDB_REQUIRED_COLUMNS = frozenset({"id", "title"})
IMDB_REQUIRED_COLUMNS = frozenset({"movie_title", "title_year"})
EXPORT_COLUMNS = [
    "budget",
    "genres",
    "homepage",
    "id",
    "keywords",
    "original_language",
    "original_title",
    "overview",
    "popularity",
    "production_companies",
    "production_countries",
    "release_date",
    "revenue",
    "runtime",
    "spoken_languages",
    "status",
    "tagline",
    "title",
    "vote_average",
    "vote_count",
    "belongs_to_collection",
    "cast",
    "crew",
    "imdb",
]

csv.field_size_limit(sys.maxsize)


class CsvFormatError(ValueError):
    """The file as a whole is not in the expected format (e.g. missing columns)."""


@dataclass
class ImportReport:
    rows: int = 0
    summary: WriteSummary = field(default_factory=WriteSummary)
    imdb_updated: int = 0

    @property
    def errors(self) -> list[tuple[int, str]]:
        return self.summary.errors


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
        )
    return str(exc)


# Bytes that are not UTF-8 are read as lone surrogates (`surrogateescape`), so that one bad
# byte costs its row, reported, instead of stopping the import at the first one.
_UNDECODED = re.compile("[\udc80-\udcff]")


def _not_utf8(cells: dict[str, str]) -> str | None:
    """The reason a row's cells are not all text (bytes that are not UTF-8), or None."""
    for column, value in cells.items():
        if value and (found := _UNDECODED.search(value)):
            byte = ord(found.group()) - 0xDC00
            return f"{column}: not UTF-8 text (byte 0x{byte:02X} at character {found.start()})"
    return None


def iter_tmdb_csv(path: Path) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
    """Yield (line number where the record starts, row, error) for every record."""
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        header = set(reader.fieldnames or [])
        missing = TMDB_REQUIRED_COLUMNS - header
        if missing:
            raise CsvFormatError(f"{path}: missing columns {sorted(missing)}")
        start = reader.line_num + 1
        for row in reader:
            if None in row:
                cells = len(row) - 1 + len(row[None])
                yield start, None, f"{cells} cells, expected {len(header)}"
            elif any(v is None for v in row.values()):
                yield start, None, "too few cells"
            elif (undecoded := _not_utf8(row)) is not None:
                yield start, None, undecoded
            else:
                yield start, row, None
            start = reader.line_num + 1


async def import_tmdb_csv(
    db: AsyncDatabase[Document],
    path: Path,
    progress: Progress | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Load a TMDB 5000-format CSV. Bad rows are reported with their line; good rows load."""
    report = ImportReport()
    batch: list[MovieDocument] = []
    imdb: dict[int, ImdbInfo] = {}
    known = await existing_hashes(db)

    async def flush() -> None:
        report.summary.add(await upsert_movies(db, batch, known))
        if imdb:
            report.imdb_updated += (await set_imdb(db, imdb))[0]
        if progress:
            progress(len(batch))
        batch.clear()
        imdb.clear()

    for line, row, error in iter_tmdb_csv(path):
        report.rows += 1
        if row is None:
            report.summary.rejected += 1
            report.summary.errors.append((line, error or "malformed row"))
            continue
        try:
            movie = to_movie(row, "tmdb-csv")
            if row.get("imdb"):
                imdb[movie.id] = ImdbInfo.model_validate_json(row["imdb"])
        except (RecordError, ValidationError, ValueError) as exc:
            report.summary.rejected += 1
            report.summary.errors.append((line, _reason(exc)))
            continue
        batch.append(movie)
        if len(batch) >= batch_size:
            await flush()
    if batch:
        await flush()
    return report


# --- IMDB 5000 ---------------------------------------------------------------------------

_IMDB_ID = re.compile(r"/title/(tt\d+)")


@dataclass
class ImdbReport:
    rows: int = 0
    duplicates: int = 0
    matched: int = 0
    unmatched: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "rows",
                "duplicates",
                "matched",
                "unmatched",
                "updated",
                "unchanged",
                "rejected",
            )
        }


def _opt_int(value: Any) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).replace("\xa0", " ").strip()
    return text or None


def read_imdb_csv(path: Path, report: ImdbReport) -> dict[tuple[str, int], ImdbInfo]:
    """Parse and clean the IMDB 5000 file into {(normalized title, year): facts}."""
    try:
        frame = pd.read_csv(
            path,
            dtype=object,  # Python strings: Arrow's cannot hold the undecoded bytes
            keep_default_na=False,
            encoding="utf-8-sig",
            encoding_errors="surrogateescape",
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeError) as exc:
        # An empty file, broken quoting, or a header that is not text.
        raise CsvFormatError(f"{path}: not a CSV file of films ({exc})") from None
    missing = IMDB_REQUIRED_COLUMNS - set(frame.columns)
    if missing:
        raise CsvFormatError(f"{path}: missing columns {sorted(missing)}")
    frame = frame.replace({"": None})
    report.rows = len(frame)
    frame["line"] = frame.index + 2  # header is line 1; this file has no multi-line cells
    undecoded = (
        frame.drop(columns="line")
        .apply(lambda column: column.str.contains(_UNDECODED, na=False))
        .any(axis=1)
    )
    for line, cells in zip(
        frame.loc[undecoded, "line"],
        frame[undecoded].drop(columns="line").to_dict("records"),
        strict=True,
    ):
        report.rejected += 1
        report.errors.append((int(line), _not_utf8(cells) or "not UTF-8 text"))
    frame = frame[~undecoded]
    frame["imdb_id"] = frame.get("movie_imdb_link", pd.Series(dtype=str)).str.extract(
        _IMDB_ID, expand=False
    )
    before = len(frame)
    with_id = frame[frame["imdb_id"].notna()].drop_duplicates("imdb_id", keep="first")
    frame = pd.concat([with_id, frame[frame["imdb_id"].isna()]])
    report.duplicates = before - len(frame)
    numeric = {
        "title_year": "title_year",
        "imdb_score": "imdb_score",
        "num_voted_users": "num_voted_users",
        "gross": "gross",
    }
    for column in numeric:
        if column not in frame:
            frame[column] = None
        frame[column + "_num"] = pd.to_numeric(frame[column], errors="coerce")
    out: dict[tuple[str, int], ImdbInfo] = {}
    for row in frame.sort_values("line").to_dict("records"):
        line = int(row["line"])
        title = _opt_str(row.get("movie_title"))
        year = row["title_year_num"]
        bad = [c for c in numeric if row.get(c) is not None and math.isnan(row[c + "_num"])]
        if title is None or year is None or math.isnan(year) or bad:
            reason = (
                "movie_title: missing"
                if title is None
                else f"{bad[0]}: not a number: {row[bad[0]]!r}"
                if bad
                else "title_year: missing"
            )
            report.rejected += 1
            report.errors.append((line, reason))
            continue
        try:
            info = ImdbInfo(
                imdb_id=_opt_str(row.get("imdb_id")),
                director=_opt_str(row.get("director_name")),
                actors=[a for a in (_opt_str(row.get(f"actor_{i}_name")) for i in (1, 2, 3)) if a],
                score=None if math.isnan(row["imdb_score_num"]) else float(row["imdb_score_num"]),
                votes=_opt_int(row["num_voted_users_num"]),
                content_rating=_opt_str(row.get("content_rating")),
                gross_us=_opt_int(row["gross_num"]),
            )
        except ValidationError as exc:
            report.rejected += 1
            report.errors.append((line, _reason(exc)))
            continue
        out.setdefault((normalize_title(title), int(year)), info)
    return out


async def import_imdb_csv(db: AsyncDatabase[Document], path: Path) -> ImdbReport:
    """Join IMDB facts onto the films already loaded (normalized title + release year)."""
    report = ImdbReport()
    facts = read_imdb_csv(path, report)
    by_key: dict[tuple[str, int], list[int]] = {}
    async for doc in scan(
        db,
        {"_id": 0, "id": 1, "title_normalized": 1, "original_title": 1, "release_year": 1},
        {"release_year": {"$ne": None}},
    ):
        year = int(doc["release_year"])
        keys = {doc["title_normalized"]}
        if doc.get("original_title"):
            keys.add(normalize_title(doc["original_title"]))
        for key in keys:
            by_key.setdefault((key, year), []).append(int(doc["id"]))
    enrichment: dict[int, ImdbInfo] = {}
    for key, info in facts.items():
        ids = by_key.get(key)
        if not ids:
            report.unmatched += 1
            continue
        report.matched += 1
        for movie_id in ids:
            enrichment.setdefault(movie_id, info)
    report.updated, report.unchanged = await set_imdb(db, enrichment)
    return report


# --- export ------------------------------------------------------------------------------


def _raw_money(doc: dict[str, Any], field: str) -> int | float:
    """The amount as the source had it (the raw layer re-imports to the same film)."""
    value = doc.get(field)
    if not value:
        return 0
    if f"{field}_scaled_from_millions" in (doc.get("quality_flags") or []):
        return value / 1_000_000  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]


def _export_row(doc: dict[str, Any]) -> dict[str, Any]:
    def objects(values: list[str], key: str = "name") -> str:
        return json.dumps([{key: v} for v in values or []], ensure_ascii=False)

    return {
        "budget": _raw_money(doc, "budget"),
        "genres": objects(doc.get("genres", [])),
        "homepage": doc.get("homepage") or "",
        "id": doc["id"],
        "keywords": objects(doc.get("keywords", [])),
        "original_language": doc.get("original_language") or "",
        "original_title": doc.get("original_title") or "",
        "overview": doc.get("overview") or "",
        "popularity": doc.get("popularity") if doc.get("popularity") is not None else "",
        "production_companies": objects(doc.get("production_companies", [])),
        "production_countries": objects(doc.get("production_countries", []), "iso_3166_1"),
        "release_date": doc.get("release_date") or "",
        "revenue": _raw_money(doc, "revenue"),
        "runtime": doc.get("runtime") or "",
        "spoken_languages": objects(doc.get("spoken_languages", []), "iso_639_1"),
        "status": doc.get("status") or "",
        "tagline": doc.get("tagline") or "",
        "title": doc["title"],
        "vote_average": doc.get("vote_average") if doc.get("vote_average") is not None else "",
        "vote_count": doc.get("vote_count") if doc.get("vote_count") is not None else "",
        "belongs_to_collection": doc.get("belongs_to_collection") or "",
        "cast": json.dumps(doc.get("cast") or [], ensure_ascii=False),
        "crew": json.dumps(doc.get("crew") or [], ensure_ascii=False),
        "imdb": json.dumps(doc["imdb"], ensure_ascii=False) if doc.get("imdb") else "",
    }


async def export_csv(db: AsyncDatabase[Document], path: Path) -> int:
    """Write every film in the TMDB 5000 format (plus credits and IMDB columns), by id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_COLUMNS)
        writer.writeheader()
        async for doc in scan(db, {"_id": 0}, sort="id"):
            writer.writerow(_export_row(doc))
            count += 1
    tmp.replace(path)
    return count
