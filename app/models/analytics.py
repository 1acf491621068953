"""Response schemas of `/v1/analytics/*`. Statistics use known values only: an unknown
budget or revenue is left out (it is never counted as zero), and `n` says how many were known."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from app.models.movie import FilmNumber

StatField = Literal["revenue", "budget", "profit", "roi", "vote_average", "runtime"]
NumericField = Literal[FilmNumber, "release_month", "imdb_score"]
TopMetric = Literal[
    "revenue",
    "budget",
    "profit",
    "roi",
    "vote_average",
    "popularity",
    "vote_count",
    "runtime",
    "imdb_score",
]
GroupSort = Literal["films", "revenue", "vote_average"]

STATS_EXAMPLE: dict[str, JsonValue] = {
    "n": 512,
    "mean": 215_300_000.0,
    "median": 120_100_000.0,
    "p25": 45_000_000.0,
    "p75": 260_000_000.0,
    "min": 12_000.0,
    "max": 2_787_965_087.0,
    "sum": 110_233_600_000.0,
}


class Stats(BaseModel):
    """Summary statistics of the known values of one field."""

    model_config = ConfigDict(json_schema_extra={"examples": [STATS_EXAMPLE]})

    n: int = Field(description="How many values were known (and used)")
    mean: float | None = None
    median: float | None = None
    p25: float | None = Field(default=None, description="25th percentile (linear)")
    p75: float | None = Field(default=None, description="75th percentile (linear)")
    min: float | None = None
    max: float | None = None
    sum: float | None = Field(
        default=None, description="Only for amounts (budget, revenue, profit)"
    )


class AppliedFilters(BaseModel):
    """The filters as the server understood them (normalized)."""

    genre: list[str] = Field(default_factory=list, examples=[["Action"]])
    year_from: int | None = Field(default=None, examples=[2000])
    year_to: int | None = Field(default=None, examples=[2010])
    language: str | None = Field(default=None, examples=["en"])
    company: str | None = Field(default=None, examples=[None])
    min_votes: int | None = Field(default=None, examples=[100])


class AnalyticsResponse(BaseModel):
    """Fields common to every analytics answer."""

    data_version: int = Field(description="Version of the catalogue the answer was computed on")
    films: int = Field(description="Films matching the filters", examples=[924])
    filters: AppliedFilters


class Economics(BaseModel):
    """Count and money/rating statistics of a set of films."""

    count: int = Field(description="Films in the group", examples=[924])
    revenue: Stats
    budget: Stats
    profit: Stats
    roi: Stats = Field(description="(revenue - budget) / budget, films with both known")
    vote_average: Stats
    runtime: Stats


# The grouping key is declared in a base listed after `Economics`, so that it comes first in
# the JSON (pydantic orders inherited fields from the last base to the first).
class _GenreKey(BaseModel):
    genre: str = Field(examples=["Action"])


class GenreItem(Economics, _GenreKey):
    pass


class GenresResponse(AnalyticsResponse):
    items: list[GenreItem] = Field(description="One entry per genre, most films first")


class _PeriodKey(BaseModel):
    period: int | str = Field(
        description="Release year (by=year), first year of the decade (by=decade) or "
        "`YYYY-MM` (by=month)",
        examples=[2009],
    )


class TrendItem(Economics, _PeriodKey):
    pass


class TrendsResponse(AnalyticsResponse):
    by: Literal["year", "month", "decade"]
    items: list[TrendItem] = Field(description="Periods with at least one film, oldest first")


class _MonthKey(BaseModel):
    month: int = Field(ge=1, le=12, examples=[12])
    month_name: str = Field(examples=["December"])


class SeasonItem(Economics, _MonthKey):
    pass


class SeasonalityResponse(AnalyticsResponse):
    items: list[SeasonItem] = Field(description="Twelve entries, January to December")


class TopItem(BaseModel):
    id: int = Field(examples=[19995])
    title: str = Field(examples=["Avatar"])
    release_year: int | None = Field(examples=[2009])
    value: float = Field(examples=[2_787_965_087.0])


class TopResponse(AnalyticsResponse):
    metric: TopMetric
    order: Literal["desc", "asc"]
    items: list[TopItem] = Field(description="Films with a known value; ties broken by id")


class DistributionResponse(AnalyticsResponse):
    field: NumericField
    scale: Literal["linear", "log"]
    edges: list[float] = Field(
        description="bins + 1 bin edges; every bin is [left, right) except the last, "
        "which includes its right edge",
        examples=[[1.0, 10.0, 100.0]],
    )
    counts: list[int] = Field(examples=[[12, 40]])
    unknown: int = Field(description="Matching films without a value for the field")
    excluded: int = Field(description="Values <= 0 left out of a log-scale histogram")
    stats: Stats


class CorrelationsResponse(AnalyticsResponse):
    method: Literal["pearson", "spearman"]
    fields: list[NumericField]
    n: int = Field(description="Films with every field known (listwise deletion)")
    matrix: list[list[float | None]] = Field(
        description="matrix[i][j] is the correlation of fields[i] and fields[j]; null when "
        "undefined (fewer than 2 films or a constant field)",
        examples=[[[1.0, 0.73], [0.73, 1.0]]],
    )


class PersonItem(BaseModel):
    name: str = Field(examples=["Steven Spielberg"])
    films: int = Field(examples=[26])
    revenue: Stats
    vote_average: Stats
    first_year: int | None = Field(examples=[1975])
    last_year: int | None = Field(examples=[2016])


class PeopleResponse(AnalyticsResponse):
    role: Literal["director", "actor"]
    sort: GroupSort
    items: list[PersonItem]


class _CompanyKey(BaseModel):
    company: str = Field(examples=["Warner Bros."])


class CompanyItem(Economics, _CompanyKey):
    pass


class CompaniesResponse(AnalyticsResponse):
    sort: GroupSort
    items: list[CompanyItem]


class _LanguageKey(BaseModel):
    language: str = Field(description="ISO 639-1 original language", examples=["en"])


class LanguageItem(Economics, _LanguageKey):
    pass


class LanguagesResponse(AnalyticsResponse):
    sort: GroupSort
    items: list[LanguageItem]


class Coverage(BaseModel):
    known: int = Field(examples=[3000])
    share: float = Field(description="known / films (0 when no film matches)", examples=[0.79])


class Totals(BaseModel):
    budget: float = Field(description="Sum of known budgets", examples=[1.1e11])
    revenue: float = Field(description="Sum of known revenues", examples=[3.2e11])
    profit: float = Field(description="Sum over films with budget and revenue", examples=[2e11])


class Distinct(BaseModel):
    genres: int = Field(examples=[20])
    languages: int = Field(examples=[36])
    companies: int = Field(examples=[4200])


class SummaryResponse(AnalyticsResponse):
    catalogue_films: int = Field(description="Films in the catalogue, before filters")
    with_budget_and_revenue: int = Field(examples=[2500])
    year_min: int | None = Field(examples=[1916])
    year_max: int | None = Field(examples=[2016])
    coverage: dict[str, Coverage] = Field(description="Known values per field")
    totals: Totals
    distinct: Distinct
