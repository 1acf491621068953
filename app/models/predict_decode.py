"""Clean prediction bodies decoded straight from their JSON bytes, without a dict per object.

A 1,000-film body holds ~30,000 JSON objects. Parsing them into dicts (`orjson.loads`) and
checking them in Python (`app.models.predict_fast`) cost ~40 ms of a ~100 ms batch, all of
it holding the GIL, and freeing those dicts after the answer a few more. Here msgspec decodes
the body into typed structs in one C pass that also checks every type, range and length
`app.models.predict.Film` declares; what is left in Python is what msgspec cannot say (a name
with blanks to strip, a blank text that means "unknown") and deriving each film's canonical
record, as `predict_fast` derives it.

Like `predict_fast`, it accepts a strict subset of what pydantic accepts and is all or
nothing: `decode_clean` returns None for any body it does not take whole (a value pydantic
would coerce, trim, drop or refuse, TMDB's API shape with `credits`, a film over a limit),
and the caller validates that body the usual way, so every 422 and dropped item is reported
exactly as before. `tests/test_predict_decode.py` checks it against pydantic film by film.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from app.ml.features import LEAD_ACTORS
from app.models.predict_fast import (
    CODE_MAX,
    ID_MAX,
    INTERVAL_LEVEL_MAX,
    INTERVAL_LEVEL_MIN,
    LANGUAGE_MAX,
    LIST_MAX,
    MAX_ITEMS,
    NAME_MAX,
    OVERVIEW_MAX,
    RATING_MAX,
    RUNTIME_MAX,
    TEXT_MAX,
    TITLE_MAX,
    canonical_record,
)

_Text = Annotated[str, Meta(max_length=TEXT_MAX)]
# Names (and codes) are plain strings here: pydantic strips them before it checks their
# length, so blanks and lengths are checked in Python, once per batch (`_Records.clean`).


class _Ref(Struct, gc=False):
    """`TmdbRef`: `{"id": 28, "name": "Action"}` (`id` optional, never null)."""

    name: str
    id: int | UnsetType = UNSET


class _Country(Struct, gc=False, rename={"code": "iso_3166_1"}):
    """A country object: `CountryRef` when it has its code (any `id` ignored, `name` a
    string when given), else a `TmdbRef`."""

    code: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    id: Any = UNSET


class _Language(Struct, gc=False, rename={"code": "iso_639_1"}):
    """A language object, as `_Country` (`LanguageRef`, else a `TmdbRef`)."""

    code: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    id: Any = UNSET


_Coded = _Country | _Language


class _Cast(Struct, gc=False):
    name: str
    character: str | None = None
    order: Annotated[int, Meta(ge=0)] | UnsetType = UNSET


class _Crew(Struct, gc=False):
    name: str
    job: str | None = None
    department: str | None = None


class CleanFilm(Struct):
    """One film of a clean body: the `Film` fields the service reads after validation."""

    id: Annotated[int, Meta(ge=1, le=ID_MAX)] | None = None
    title: Annotated[str, Meta(max_length=TITLE_MAX)] | None = None
    budget: Annotated[float, Meta(ge=0)] | None = None
    runtime: Annotated[float, Meta(ge=0, le=RUNTIME_MAX)] | None = None
    release_date: date | None = None
    original_language: Annotated[str, Meta(max_length=LANGUAGE_MAX)] | None = None
    genres: Annotated[list[str | _Ref], Meta(max_length=LIST_MAX["genres"])] = field(
        default_factory=list
    )
    production_companies: Annotated[
        list[str | _Ref], Meta(max_length=LIST_MAX["production_companies"])
    ] = field(default_factory=list)
    production_countries: Annotated[
        list[str | _Country], Meta(max_length=LIST_MAX["production_countries"])
    ] = field(default_factory=list)
    spoken_languages: Annotated[
        list[str | _Language], Meta(max_length=LIST_MAX["spoken_languages"])
    ] = field(default_factory=list)
    keywords: Annotated[list[str | _Ref], Meta(max_length=LIST_MAX["keywords"])] = field(
        default_factory=list
    )
    homepage: _Text | None = None
    tagline: _Text | None = None
    overview: Annotated[str, Meta(max_length=OVERVIEW_MAX)] | None = None
    content_rating: Annotated[str, Meta(max_length=RATING_MAX)] | None = None
    belongs_to_collection: str | _Ref | None = None
    cast: Annotated[list[str | _Cast], Meta(max_length=LIST_MAX["cast"])] = field(
        default_factory=list
    )
    crew: Annotated[list[str | _Crew], Meta(max_length=LIST_MAX["crew"])] = field(
        default_factory=list
    )
    # TMDB's API shape (cast and crew under `credits`) is flattened by the usual path.
    credits: msgspec.Raw | UnsetType = UNSET

    @property
    def dropped(self) -> list[tuple[str, int | None]]:
        return []  # a clean film has no blank name to drop


class _Body(Struct):
    items: Annotated[list[CleanFilm], Meta(min_length=1, max_length=MAX_ITEMS)]
    interval_level: Annotated[float, Meta(ge=INTERVAL_LEVEL_MIN, le=INTERVAL_LEVEL_MAX)] | None = (
        None
    )


@dataclass(frozen=True, slots=True)
class CleanBatch:
    """A prediction body `decode_clean` took whole: its films, each film's canonical record
    (`app.ml.features.film_record`'s), and the interval level asked for."""

    items: list[CleanFilm]
    records: list[dict[str, Any]]
    interval_level: float | None


class _NotClean(Exception):
    """Some value needs pydantic: the body goes the usual way."""


_DECODER = msgspec.json.Decoder(_Body)


def _clean(names: list[str], limit: int) -> bool:
    """Whether pydantic keeps every name as it is: none blank, none too long, none with
    blanks to strip (`str.strip` strips a superset of what pydantic strips). Checked once
    per batch, in C, over every name of every film."""
    return (
        "" not in names
        and max(map(len, names), default=0) <= limit
        and list(map(str.strip, names)) == names
    )


def _unique(names: list[str]) -> list[str]:
    # Deduplicated in order, as `film_document` does (most lists have no repeat).
    return names if len(set(names)) == len(names) else list(dict.fromkeys(names))


class _Records:
    """Canonical records of a batch's films, as `predict_fast` derives them (see there); the
    names they hold are collected and checked at the end (`clean`)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.codes: list[str] = []

    def listed(self, values: list[str | _Ref]) -> list[str]:
        names = [v if type(v) is str else v.name for v in values]  # type: ignore[union-attr]
        self.names += names
        return _unique(names)

    def coded(self, values: Sequence[str | _Coded]) -> list[str]:
        names: list[str] = []
        for value in values:
            if isinstance(value, str):
                self.names.append(value)
                names.append(value)
            elif value.code is not UNSET:
                self.codes.append(value.code)
                names.append(value.code)
            elif value.name is UNSET or (value.id is not UNSET and type(value.id) is not int):
                raise _NotClean  # a `TmdbRef` needs its name; pydantic coerces or refuses ids
            else:
                self.names.append(value.name)
                names.append(value.name)
        return _unique(names)

    def actors(self, cast: list[str | _Cast]) -> list[str]:
        """The lead actors `film_record` picks: by billing order (`order`, else the
        position), the first LEAD_ACTORS."""
        names = [m if type(m) is str else m.name for m in cast]  # type: ignore[union-attr]
        self.names += names
        orders = [
            at if type(m) is str or m.order is UNSET else m.order  # type: ignore[union-attr]
            for at, m in enumerate(cast)
        ]
        if orders != sorted(orders):  # stable: ties keep the posted order, as sorted() does
            return [names[at] for at in sorted(range(len(orders)), key=orders.__getitem__)][
                :LEAD_ACTORS
            ]
        return names[:LEAD_ACTORS]

    def directors(self, crew: list[str | _Crew]) -> list[str]:
        # Every member's name is checked; plain names carry no job and are not used.
        self.names += [m if type(m) is str else m.name for m in crew]  # type: ignore[union-attr]
        return [m.name for m in crew if type(m) is not str and m.job == "Director"]  # type: ignore[union-attr]

    def record(self, film: CleanFilm) -> dict[str, Any]:
        """The film's canonical record (its names checked later, with the batch's)."""
        if film.credits is not UNSET:
            raise _NotClean
        language = film.original_language
        if language is not None and not language.strip():
            language = None  # blank is unknown, as `Film._blank_is_unknown` says
        collection = film.belongs_to_collection
        if collection is not None:
            self.names.append(collection if isinstance(collection, str) else collection.name)
        return canonical_record(
            title=film.title,
            budget=_finite(film.budget),
            runtime=_finite(film.runtime),
            released=film.release_date,
            language=language,
            genres=self.listed(film.genres),
            companies=self.listed(film.production_companies),
            countries=self.coded(film.production_countries),
            spoken=self.coded(film.spoken_languages),
            keywords=self.listed(film.keywords),
            homepage=film.homepage,
            tagline=film.tagline,
            overview=film.overview,
            rating=film.content_rating,
            in_collection=collection is not None,
            directors=self.directors(film.crew),
            actors=self.actors(film.cast),
        )

    def clean(self) -> bool:
        return _clean(self.names, NAME_MAX) and _clean(self.codes, CODE_MAX)


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise _NotClean  # an integer too big for a float; pydantic refuses it
    return value


def decode_clean(body: bytes) -> CleanBatch | None:
    """The batch a clean JSON body holds, or None when the body needs pydantic (to coerce,
    trim, drop or refuse anything)."""
    try:
        if not body.isascii():
            # msgspec takes a surrogate encoded in UTF-8 (b"\xed\xa0\x80") as text, which
            # the answer could not encode; Python's codec refuses it (and the route says so).
            body.decode()
        parsed = _DECODER.decode(body)
        derive = _Records()
        records = list(map(derive.record, parsed.items))
        return CleanBatch(parsed.items, records, parsed.interval_level) if derive.clean() else None
    except (msgspec.DecodeError, UnicodeDecodeError, _NotClean):
        return None
