"""Response schemas of `/v1/movies`: a light summary per film in lists, the full film by id."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.models.movie import FilmLists, FilmNumber, ImdbInfo

SortField = Literal["id", FilmNumber]

SUMMARY_EXAMPLE: dict[str, JsonValue] = {
    "id": 19995,
    "title": "Avatar",
    "original_language": "en",
    "release_date": "2009-12-10",
    "release_year": 2009,
    "genres": ["Action", "Adventure", "Fantasy", "Science Fiction"],
    "budget": 237000000,
    "revenue": 2787965087,
    "profit": 2550965087,
    "roi": 10.763566,
    "runtime": 162.0,
    "popularity": 150.437577,
    "vote_average": 7.2,
    "vote_count": 11800,
}


class MovieSummary(BaseModel):
    """A film in a list. Unknown amounts are null, never zero."""

    model_config = ConfigDict(json_schema_extra={"examples": [SUMMARY_EXAMPLE]})

    id: int = Field(description="TMDB id")
    title: str
    original_language: str | None = None
    release_date: date | None = None
    release_year: int | None = None
    genres: list[str] = Field(default_factory=list)
    budget: int | None = None
    revenue: int | None = None
    profit: int | None = None
    roi: float | None = Field(default=None, description="(revenue - budget) / budget")
    runtime: float | None = None
    popularity: float | None = None
    vote_average: float | None = None
    vote_count: int | None = None


class _DetailFacts(MovieSummary):
    """The fields of a film's detail before its lists (`MovieDetail`)."""

    original_title: str | None = None
    overview: str | None = None
    tagline: str | None = None
    homepage: str | None = None
    status: str | None = None
    release_month: int | None = None
    release_weekday: int | None = Field(default=None, description="Monday=0")


class MovieDetail(FilmLists, _DetailFacts):
    """A film with everything the catalogue holds about it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **SUMMARY_EXAMPLE,
                    "original_title": "Avatar",
                    "overview": "In the 22nd century, a paraplegic Marine is dispatched...",
                    "tagline": "Enter the World of Pandora.",
                    "production_companies": ["Twentieth Century Fox Film Corporation"],
                    "production_countries": ["US", "GB"],
                    "spoken_languages": ["en", "es"],
                    "imdb": {"director": "James Cameron", "score": 7.9, "votes": 886204},
                }
            ]
        }
    )

    imdb: ImdbInfo | None = None
    quality_flags: list[str] = Field(default_factory=list)
    updated_at: datetime | None = None


class MovieList(BaseModel):
    """One page of films matching the query."""

    items: list[MovieSummary]
    total: int = Field(description="Films matching the query (all pages)", examples=[412])
    limit: int = Field(examples=[20])
    offset: int = Field(description="Offset of the first item (0 when paging by cursor)")
    sort: str = Field(examples=["-revenue"])
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last page"
    )
