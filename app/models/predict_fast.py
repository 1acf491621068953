"""The fast path of prediction input: films checked in plain Python, no pydantic.

A 1,000-film batch carries ~30,000 list items. Validating them through pydantic (even as
TypedDicts inside pydantic-core) and then rebuilding each film as a stored document and a
canonical record cost more than scoring them. Most films a client posts are clean: numbers
as JSON numbers, dates as `YYYY-MM-DD`, names without surrounding blanks. For those,
`fast_film` checks every constraint `app.models.predict.Film` declares and, in the same
pass, derives the canonical record `app.ml.features.film_record` would give for the
validated film.

It accepts a strict subset of what pydantic accepts, and returns None for anything else: a
value pydantic would coerce (`"120"` for a budget, `28.0` for an id), refuse (a negative
budget, a date that does not exist) or trim (a name with blanks around it, a blank name to
drop; about 1% of real TMDB records). Such a film is validated by pydantic alone; when
pydantic refuses it, the whole request is validated by pydantic, so every 422 and every
dropped item is reported exactly as before, naming the film index and the field.
`tests/test_predict_fast.py` checks that both paths give the same films and records.
"""

from __future__ import annotations

import math
import re
from datetime import date
from operator import itemgetter
from typing import Any

from app.ml.features import LEAD_ACTORS, money

MAX_ITEMS = 1000  # PredictRequest.items (app.models.predict)
INTERVAL_LEVEL_MIN, INTERVAL_LEVEL_MAX = 0.5, 0.95  # PredictRequest.interval_level
ID_MAX = 2**53  # Film.id: a JSON number every client reads exactly
NAME_MAX, CODE_MAX = 300, 10
TITLE_MAX, LANGUAGE_MAX, TEXT_MAX = 500, 10, 2000
OVERVIEW_MAX, RATING_MAX = 10_000, 20
RUNTIME_MAX = 1000.0
# Lengths of the list fields, as `Film` declares them.
LIST_MAX = {
    "genres": 50,
    "production_companies": 200,
    "production_countries": 100,
    "spoken_languages": 100,
    "keywords": 500,
    "cast": 1000,
    "crew": 5000,
}
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


class _Slow(Exception):
    """This film needs pydantic (to coerce, trim, drop or refuse something)."""


def _name(value: Any, limit: int = NAME_MAX) -> str:
    # pydantic strips Unicode whitespace first; a name with none around it is kept as is
    # (`str.strip` strips a superset of the characters pydantic strips).
    if type(value) is not str or not value or len(value) > limit or value.strip() != value:
        raise _Slow
    return value


def _ref_name(item: Any, code_key: str | None = None) -> str:
    """A list item's name as `film_document` keeps it: a plain name, the ISO code of a
    country/language object, or a TMDB object's `name`."""
    if type(item) is str:
        return _name(item)
    if type(item) is not dict:
        raise _Slow
    if code_key is not None and code_key in item:
        if "name" in item and type(item["name"]) is not str:
            raise _Slow  # `name: str`, null refused
        return _name(item[code_key], CODE_MAX)
    if "id" in item and type(item["id"]) is not int:
        raise _Slow  # pydantic coerces "28" or 28.0 and refuses null
    return _name(item.get("name"))


def _names(values: Any, field: str, code_key: str | None = None) -> list[str]:
    if type(values) is not list or len(values) > LIST_MAX[field]:
        raise _Slow
    if not values:
        return []
    names: list[str] = []
    for item in values:
        # `_ref_name` inlined for the common shapes: this loop sees ~30,000 items a batch.
        if type(item) is dict and (code_key is None or code_key not in item):
            if "id" in item and type(item["id"]) is not int:
                raise _Slow
            name = item.get("name")
        elif type(item) is str:
            name = item
        else:
            names.append(_ref_name(item, code_key))
            continue
        # A name pydantic would keep as is: a non-empty string, short enough, with no
        # whitespace to strip (`str.strip` strips a superset of what pydantic strips).
        if type(name) is not str or not name or len(name) > NAME_MAX or name.strip() != name:
            raise _Slow
        names.append(name)
    # Deduplicated in order, as `film_document` does (most lists have no repeat: a set's
    # size says so for less than rebuilding the list).
    return names if len(set(names)) == len(names) else list(dict.fromkeys(names))


def _number(value: Any, upper: float | None = None) -> float | None:
    if value is None:
        return None
    kind = type(value)
    if kind is str:
        if value.strip():
            raise _Slow  # a number in a string: pydantic parses (or refuses) it
        return None  # "" is unknown, as `Film._blank_is_unknown` says
    if kind is int:
        try:
            number = float(value)
        except OverflowError:
            raise _Slow from None
    elif kind is float:
        number = value
    else:
        raise _Slow
    if not math.isfinite(number) or number < 0 or (upper is not None and number > upper):
        raise _Slow
    return number


def _release(value: Any) -> date | None:
    if value is None:
        return None
    if type(value) is not str:
        raise _Slow
    if not value.strip():
        return None
    if not _ISO_DATE.fullmatch(value):
        raise _Slow
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Slow from None


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if type(value) is not str or len(value) > limit:
        raise _Slow
    return value


def _cast(values: Any) -> list[str]:
    """The lead actors `film_record` picks: by billing order (`order`, else the position),
    the first LEAD_ACTORS."""
    if type(values) is not list or len(values) > LIST_MAX["cast"]:
        raise _Slow
    billed: list[tuple[int, str]] = []
    for position, member in enumerate(values):
        if type(member) is str:
            billed.append((position, _name(member)))
            continue
        if type(member) is not dict:
            raise _Slow
        # `_name` and the other field checks inlined: ~3,000 members a batch.
        name = member.get("name")
        if type(name) is not str or not name or len(name) > NAME_MAX or name.strip() != name:
            raise _Slow
        character = member.get("character")
        if character is not None and type(character) is not str:
            raise _Slow
        order = member.get("order", position)
        if type(order) is not int or order < 0:
            raise _Slow
        billed.append((order, name))
    if len(billed) > 1:
        billed.sort(key=itemgetter(0))  # stable: ties keep the posted order, as sorted() does
    return [name for _order, name in billed[:LEAD_ACTORS]]


def _directors(values: Any) -> list[str]:
    if type(values) is not list or len(values) > LIST_MAX["crew"]:
        raise _Slow
    directors: list[str] = []
    for member in values:
        if type(member) is str:
            _name(member)  # a plain name carries no job: validated, not used
            continue
        if type(member) is not dict:
            raise _Slow
        name = member.get("name")
        if type(name) is not str or not name or len(name) > NAME_MAX or name.strip() != name:
            raise _Slow
        job = member.get("job")
        department = member.get("department")
        if (job is not None and type(job) is not str) or (
            department is not None and type(department) is not str
        ):
            raise _Slow
        if job == "Director":
            directors.append(name)
    return directors


def _collection(value: Any) -> bool:
    if value is None:
        return False
    _ref_name(value)
    return True  # a valid name is never blank


def flatten_api_record(data: dict[str, Any]) -> dict[str, Any]:
    """A record from TMDB's API (`/movie/{id}?append_to_response=credits,keywords`) wraps
    keywords as `{"keywords": [...]}` and puts cast and crew under `credits`; the flat fields
    win when both are given."""
    flat = dict(data)
    keywords = flat.get("keywords")
    if isinstance(keywords, dict):
        flat["keywords"] = keywords.get("keywords", keywords.get("results", []))
    credits = flat.pop("credits", None)
    if isinstance(credits, dict):
        for field in ("cast", "crew"):
            if field not in flat and field in credits:
                flat[field] = credits[field]
    return flat


def canonical_record(
    *,
    title: str | None,
    budget: float | None,
    runtime: float | None,
    released: date | None,
    language: str | None,
    genres: list[str],
    companies: list[str],
    countries: list[str],
    spoken: list[str],
    keywords: list[str],
    homepage: str | None,
    tagline: str | None,
    overview: str | None,
    rating: str | None,
    in_collection: bool,
    directors: list[str],
    actors: list[str],
) -> dict[str, Any]:
    """The record `film_record` gives for a film whose values pydantic would keep as they are
    and whose lists are already its names (both fast paths, this one and `predict_decode`)."""
    return {
        "title": title or "",
        "budget": money(budget),
        "runtime": runtime or None,
        "release_date": released.isoformat() if released is not None else None,
        "original_language": language,
        "genres": genres,
        "production_companies": companies,
        "production_countries": countries,
        "spoken_languages": spoken,
        "keywords": keywords,
        "homepage": bool(homepage and homepage.strip()),
        "tagline": bool(tagline and tagline.strip()),
        # The texts themselves, for schema 2's text features (`film_record` strips them).
        "overview": overview.strip() if overview else "",
        "tagline_text": tagline.strip() if tagline else "",
        "content_rating": rating.strip() if rating else "",
        "belongs_to_collection": in_collection,
        "directors": directors,
        "actors": actors,
        "revenue": None,
    }


def _film(item: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `Film` field values pydantic would give, the canonical record of the film)."""
    if type(item) is not dict:
        raise _Slow
    if "credits" in item or type(item.get("keywords")) is dict:
        item = flatten_api_record(item)
    get = item.get
    film_id = get("id")
    if film_id is not None and (type(film_id) is not int or not 1 <= film_id <= ID_MAX):
        raise _Slow  # pydantic coerces "28" or 28.0 and refuses 0 and 2**53 + 1
    title = _text(get("title"), TITLE_MAX)
    budget = _number(get("budget"))
    runtime = _number(get("runtime"), RUNTIME_MAX)
    released = _release(get("release_date"))
    language = get("original_language")
    if language is not None:
        if type(language) is not str or len(language) > LANGUAGE_MAX:
            raise _Slow
        if not language.strip():
            language = None
    homepage = _text(get("homepage"), TEXT_MAX)
    tagline = _text(get("tagline"), TEXT_MAX)
    overview = _text(get("overview"), OVERVIEW_MAX)
    rating = _text(get("content_rating"), RATING_MAX)
    genres = get("genres", [])
    companies = get("production_companies", [])
    countries = get("production_countries", [])
    spoken = get("spoken_languages", [])
    keywords = get("keywords", [])
    collection = get("belongs_to_collection")
    cast = get("cast", [])
    crew = get("crew", [])
    record = canonical_record(
        title=title,
        budget=budget,
        runtime=runtime,
        released=released,
        language=language,
        genres=_names(genres, "genres"),
        companies=_names(companies, "production_companies"),
        countries=_names(countries, "production_countries", "iso_3166_1"),
        spoken=_names(spoken, "spoken_languages", "iso_639_1"),
        keywords=_names(keywords, "keywords"),
        homepage=homepage,
        tagline=tagline,
        overview=overview,
        rating=rating,
        in_collection=_collection(collection),
        directors=_directors(crew),
        actors=_cast(cast),
    )
    values = {
        "id": film_id,
        "title": title,
        "budget": budget,
        "runtime": runtime,
        "release_date": released,
        "original_language": language,
        "genres": genres,
        "production_companies": companies,
        "production_countries": countries,
        "spoken_languages": spoken,
        "keywords": keywords,
        "homepage": homepage,
        "tagline": tagline,
        "overview": overview,
        "content_rating": rating,
        "belongs_to_collection": collection,
        "cast": cast,
        "crew": crew,
    }
    return values, record


FastFilm = tuple[dict[str, Any], dict[str, Any]]


def fast_film(item: Any) -> FastFilm | None:
    """(the `Film` field values pydantic would give, the film's canonical record), or None
    when this film needs pydantic."""
    try:
        return _film(item)
    except _Slow:
        return None


def fast_items(data: Any) -> list[FastFilm | None] | None:
    """For a request body `{"items": [film, ...]}`: per film, `fast_film`'s answer. None when
    the body itself is not of that shape (pydantic says why)."""
    if type(data) is not dict:
        return None
    items = data.get("items")
    if type(items) is not list or not 1 <= len(items) <= MAX_ITEMS:
        return None
    return [fast_film(item) for item in items]
