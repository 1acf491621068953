"""Response of `GET /v1/movies/{id}/similar`: the nearest films in the film feature space
(app.services.analytics.film_space)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SimilarFilm(BaseModel):
    id: int = Field(examples=[155])
    title: str = Field(examples=["The Dark Knight"])
    score: float = Field(
        ge=0, le=1, examples=[0.61], description="Cosine similarity in the film feature space"
    )


class FilmRef(BaseModel):
    id: int = Field(examples=[272])
    title: str = Field(examples=["Batman Begins"])


class SimilarResponse(BaseModel):
    data_version: int = Field(description="Version of the catalogue the answer was computed on")
    film: FilmRef = Field(description="The film asked about")
    items: list[SimilarFilm] = Field(
        description="Up to n films, most similar first (ties by id); films sharing nothing "
        "with it are left out"
    )
