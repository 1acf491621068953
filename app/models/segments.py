"""Response of `GET /v1/analytics/segments`: k-means clusters of the catalogue in the film
feature space, each described by what sets it apart from the films clustered."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.models.analytics import AnalyticsResponse
from app.models.similar import FilmRef


class LabelShare(BaseModel):
    name: str = Field(examples=["Animation"])
    share: float = Field(description="Share of the segment's films with it", examples=[0.81])
    catalogue_share: float = Field(
        description="Share of all the films clustered with it", examples=[0.05]
    )


class DecadeShare(BaseModel):
    decade: int = Field(examples=[2000])
    share: float = Field(
        description="Share of the segment's films with a known year released in it",
        examples=[0.55],
    )


class Segment(BaseModel):
    segment: int = Field(description="0 for the largest segment, then by size", examples=[0])
    size: int = Field(description="Films in the segment", examples=[412])
    share: float = Field(description="size / films", examples=[0.108])
    label: str = Field(
        description="A readable summary of what sets it apart",
        examples=["Animation & Family, 2000s, larger budgets"],
    )
    genres: list[LabelShare] = Field(
        description="Up to 3 genres most over-represented against the films clustered"
    )
    keywords: list[LabelShare] = Field(
        description="Up to 5 keywords (of 2+ films of the segment) most over-represented"
    )
    decades: list[DecadeShare] = Field(description="Up to 3 dominant release decades")
    budget_median: float | None = Field(description="Median known budget (USD)")
    revenue_median: float | None = Field(description="Median known revenue (USD)")
    examples: list[FilmRef] = Field(description="Up to 3 films nearest the segment's centre")


class CatalogueMedians(BaseModel):
    budget_median: float | None = None
    revenue_median: float | None = None


class SegmentsResponse(AnalyticsResponse):
    k: int = Field(description="Segments asked for (fewer when there are fewer films)")
    weights: dict[str, float] = Field(
        description="Weight of each feature block in the film feature space",
        examples=[{"genres": 1.0, "keywords": 1.0, "people": 1.0, "era": 0.5, "scale": 0.5}],
    )
    catalogue: CatalogueMedians = Field(description="The same medians over all films clustered")
    items: list[Segment] = Field(description="Segments, largest first; sizes add up to `films`")
