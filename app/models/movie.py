"""The `movies` document: one per film, TMDB field names, validated before every write."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CastMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    character: str | None = None
    order: int = Field(ge=0)


class CrewMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    job: str
    department: str | None = None


class ImdbInfo(BaseModel):
    """Enrichment joined from the IMDB 5000 file on normalized title + year."""

    model_config = ConfigDict(extra="forbid")

    imdb_id: str | None = None
    director: str | None = None
    actors: list[str] = Field(default_factory=list)
    score: float | None = Field(default=None, ge=0, le=10)
    votes: int | None = Field(default=None, ge=0)
    content_rating: str | None = None
    gross_us: int | None = Field(default=None, ge=0)


# The numeric facts of a film that lists sort by and analytics summarise, in that order.
FilmNumber = Literal[
    "budget",
    "revenue",
    "profit",
    "roi",
    "runtime",
    "popularity",
    "vote_average",
    "vote_count",
    "release_year",
]


class FilmLists(BaseModel):
    """The lists and credits of a film: as stored (`MovieDocument`) and as `/v1/movies/{id}`
    shows them (`MovieDetail`). Both name it first among their bases, so that its fields come
    after the other bases' (pydantic orders fields by the reversed MRO)."""

    keywords: list[str] = Field(default_factory=list)
    production_companies: list[str] = Field(default_factory=list)
    production_countries: list[str] = Field(default_factory=list, description="ISO 3166-1")
    spoken_languages: list[str] = Field(default_factory=list, description="ISO 639-1")
    belongs_to_collection: str | None = None
    cast: list[CastMember] = Field(default_factory=list)
    crew: list[CrewMember] = Field(default_factory=list)


class _StoredFacts(BaseModel):
    """The fields of a stored film before its lists (`MovieDocument`)."""

    id: int = Field(gt=0, description="TMDB id (unique)")
    title: str = Field(min_length=1)
    title_normalized: str
    original_title: str | None = None
    original_language: str | None = None
    overview: str | None = None
    tagline: str | None = None
    homepage: str | None = None
    status: str | None = None
    release_date: date | None = None
    release_year: int | None = Field(default=None, ge=1870, le=2100)
    release_month: int | None = Field(default=None, ge=1, le=12)
    release_weekday: int | None = Field(default=None, ge=0, le=6, description="Monday=0")
    budget: int | None = Field(default=None, gt=0)
    revenue: int | None = Field(default=None, gt=0)
    profit: int | None = None
    roi: float | None = Field(default=None, description="(revenue - budget) / budget")
    runtime: float | None = Field(default=None, gt=0, le=1000)
    popularity: float | None = Field(default=None, ge=0)
    vote_average: float | None = Field(default=None, ge=0, le=10)
    vote_count: int | None = Field(default=None, ge=0)
    genres: list[str] = Field(default_factory=list)


class MovieDocument(FilmLists, _StoredFacts):
    """A film as stored. Unknown money and runtime are null, never zero."""

    model_config = ConfigDict(extra="forbid")

    quality_flags: list[str] = Field(default_factory=list)
    source: Literal["tmdb-csv", "tmdb-api"]
    imdb: ImdbInfo | None = None
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _derived_fields_agree(self) -> MovieDocument:
        if self.release_date is not None and self.release_year != self.release_date.year:
            raise ValueError("release_year does not match release_date")
        if (self.budget is None or self.revenue is None) and (
            self.profit is not None or self.roi is not None
        ):
            raise ValueError("profit/roi need both budget and revenue")
        return self
