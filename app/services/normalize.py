"""Turn a TMDB-shaped record (a Kaggle CSV row or an API `/movie/{id}` answer) into a
validated `MovieDocument`. Shared by every importer so that all sources clean alike."""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from app.models.movie import CastMember, CrewMember, MovieDocument

# Crew jobs worth embedding: enough for people analytics and track-record features.
CREW_JOBS = frozenset({"Director", "Screenplay", "Writer", "Producer", "Original Music Composer"})
MAX_CAST = 10
# Kaggle's TMDB 5000 file holds budgets/revenues such as 1 or 12 that are really millions.
MILLIONS_THRESHOLD = 1000

# Fields that describe the film as TMDB has it (the content hash covers these only, so that
# bookkeeping and the IMDB enrichment never make a re-import look like a change).
HASH_EXCLUDED = frozenset({"updated_at", "imdb", "source"})


class RecordError(ValueError):
    """A record that cannot become a film; the message names the field and the reason."""


def normalize_title(title: str) -> str:
    """Lower-case, accent- and punctuation-free title used for joins and title search."""
    text = unicodedata.normalize("NFKD", title.replace("\xa0", " "))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("&", " and ")
    text = re.sub(r"[^a-z0-9]+", " ", text)
    return " ".join(text.split())


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def _text(value: Any) -> str | None:
    if _is_missing(value):
        return None
    return str(value).strip()


def _number(value: Any, field: str) -> float | None:
    if _is_missing(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"{field}: not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise RecordError(f"{field}: not a finite number")
    return number


def _money(value: Any, field: str, flags: list[str]) -> int | None:
    number = _number(value, field)
    if number is None or number == 0:
        return None  # 0 means unknown in TMDB
    if number < 0:
        raise RecordError(f"{field}: negative amount {number:g}")
    if number < MILLIONS_THRESHOLD:
        flags.append(f"{field}_scaled_from_millions")
        number *= 1_000_000
    return round(number)


def _json_list(value: Any, field: str) -> list[Any]:
    if _is_missing(value):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{field}: broken JSON ({exc.msg} at char {exc.pos})") from None
    if isinstance(value, Mapping):
        # API wrappers such as {"keywords": [...]} or {"genres": [...]}.
        inner = [v for v in value.values() if isinstance(v, list)]
        value = inner[0] if inner else []
    if not isinstance(value, list):
        raise RecordError(f"{field}: expected a list, got {type(value).__name__}")
    return value


def _name(value: Any) -> str | None:
    """A name stripped of whitespace (U+00A0 included), or None when nothing is left: TMDB
    holds list items such as a keyword named by a lone non-breaking space."""
    if not value:
        return None
    return str(value).strip() or None


def names(value: Any, field: str, *code_keys: str) -> list[str]:
    """Names (or ISO codes, for countries and languages) from TMDB objects or plain strings;
    items with a blank name are dropped."""
    out: list[str] = []
    for item in _json_list(value, field):
        if isinstance(item, str):
            name = _name(item)
        elif isinstance(item, Mapping):
            name = next((n for n in (_name(item.get(k)) for k in (*code_keys, "name")) if n), None)
        else:
            raise RecordError(f"{field}: unexpected item {str(item)[:40]!r}")
        if name and name not in out:
            out.append(name)
    return out


def _date(value: Any) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise RecordError(f"release_date: not an ISO date: {text[:20]!r}") from None


def _cast(value: Any) -> list[CastMember]:
    members: list[CastMember] = []
    for position, item in enumerate(_json_list(value, "cast")):
        if isinstance(item, str):
            if name := _name(item):
                members.append(CastMember(name=name, order=position))
        elif isinstance(item, Mapping) and (name := _name(item.get("name"))):
            order = item.get("order")
            members.append(
                CastMember(
                    name=name,
                    character=_text(item.get("character")),
                    order=int(order) if isinstance(order, int | float) else position,
                )
            )
    members.sort(key=lambda m: m.order)
    return members[:MAX_CAST]


def _crew(value: Any) -> list[CrewMember]:
    members: list[CrewMember] = []
    seen: set[tuple[str, str]] = set()
    for item in _json_list(value, "crew"):
        if not isinstance(item, Mapping) or not (name := _name(item.get("name"))):
            continue
        job = str(item.get("job") or "")
        key = (name, job)
        if job in CREW_JOBS and key not in seen:
            seen.add(key)
            members.append(
                CrewMember(name=key[0], job=job, department=_text(item.get("department")))
            )
    return members


def _collection(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _text(value.get("name"))
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return _text(value)
        return _text(parsed.get("name")) if isinstance(parsed, dict) else None
    return _text(value)


def to_movie(record: Mapping[str, Any], source: str) -> MovieDocument:
    """Clean and validate one record; raises `RecordError` (or pydantic's) naming the field."""
    raw_id = record.get("id")
    number = _number(raw_id, "id")
    if number is None:
        raise RecordError("id: missing")
    if number != int(number) or number <= 0:
        raise RecordError(f"id: not a positive integer: {raw_id!r}")
    title = _text(record.get("title")) or _text(record.get("original_title"))
    if title is None:
        raise RecordError("title: missing")
    flags: list[str] = []
    budget = _money(record.get("budget"), "budget", flags)
    revenue = _money(record.get("revenue"), "revenue", flags)
    released = _date(record.get("release_date"))
    runtime = _number(record.get("runtime"), "runtime")
    vote_count = _number(record.get("vote_count"), "vote_count")
    credits = record.get("credits") if isinstance(record.get("credits"), Mapping) else {}
    assert isinstance(credits, Mapping)
    profit = revenue - budget if budget and revenue else None
    return MovieDocument(
        id=int(number),
        title=title,
        title_normalized=normalize_title(title),
        original_title=_text(record.get("original_title")),
        original_language=_text(record.get("original_language")),
        overview=_text(record.get("overview")),
        tagline=_text(record.get("tagline")),
        homepage=_text(record.get("homepage")),
        status=_text(record.get("status")),
        release_date=released,
        release_year=released.year if released else None,
        release_month=released.month if released else None,
        release_weekday=released.weekday() if released else None,
        budget=budget,
        revenue=revenue,
        profit=profit,
        roi=round(profit / budget, 6) if profit is not None and budget else None,
        runtime=runtime if runtime else None,
        popularity=_number(record.get("popularity"), "popularity"),
        vote_average=_number(record.get("vote_average"), "vote_average"),
        vote_count=int(vote_count) if vote_count is not None else None,
        genres=names(record.get("genres"), "genres"),
        keywords=names(record.get("keywords"), "keywords"),
        production_companies=names(record.get("production_companies"), "production_companies"),
        production_countries=names(
            record.get("production_countries"), "production_countries", "iso_3166_1"
        ),
        spoken_languages=names(record.get("spoken_languages"), "spoken_languages", "iso_639_1"),
        belongs_to_collection=_collection(record.get("belongs_to_collection")),
        cast=_cast(record.get("cast", credits.get("cast"))),
        crew=_crew(record.get("crew", credits.get("crew"))),
        quality_flags=flags,
        source=source,
    )


def to_mongo(movie: MovieDocument) -> dict[str, Any]:
    """The document as written: dates as ISO strings (portable across MongoDB and FerretDB)."""
    doc = movie.model_dump(mode="json", exclude={"imdb", "updated_at"})
    return doc


def content_hash(doc: Mapping[str, Any]) -> str:
    payload = {k: v for k, v in doc.items() if k not in HASH_EXCLUDED}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(blob.encode()).hexdigest()


def iter_names(values: Iterable[Any]) -> list[str]:
    """Names from a client's list of TMDB objects or plain strings (prediction inputs)."""
    return names(list(values), "list")
