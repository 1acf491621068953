"""The catalogue filters shared by every aggregate and by movie search: one definition of
their meaning, applied by the analytics engine (over the snapshot) and by movie search (in
the database), so that `/v1/analytics/*` and `/v1/movies` always agree on which films match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import InvalidQueryError

MAX_GENRES = 20
MAX_NAME_LENGTH = 200


@dataclass(frozen=True, slots=True)
class CatalogFilter:
    """Films matching every given condition; `genres` matches films having any of them.

    Hashable and normalized (sorted, de-duplicated genres; lower-case language), so that two
    spellings of the same query share one cache entry.
    """

    genres: tuple[str, ...] = ()
    year_from: int | None = None
    year_to: int | None = None
    language: str | None = None
    company: str | None = None
    min_votes: int | None = None

    @classmethod
    def build(
        cls,
        genres: list[str] | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
        language: str | None = None,
        company: str | None = None,
        min_votes: int | None = None,
    ) -> CatalogFilter:
        """Validate and normalize; raises `InvalidQueryError` naming the parameter."""
        cleaned = sorted({g.strip() for g in genres or [] if g.strip()})
        if len(cleaned) > MAX_GENRES:
            raise InvalidQueryError(f"genre: at most {MAX_GENRES} values")
        if any(len(g) > MAX_NAME_LENGTH for g in cleaned):
            raise InvalidQueryError(f"genre: at most {MAX_NAME_LENGTH} characters")
        if year_from is not None and year_to is not None and year_from > year_to:
            raise InvalidQueryError(f"year_from ({year_from}) is after year_to ({year_to})")
        lang = language.strip().lower() if language else None
        comp = company.strip() if company else None
        return cls(
            genres=tuple(cleaned),
            year_from=year_from,
            year_to=year_to,
            language=lang or None,
            company=comp or None,
            min_votes=min_votes,
        )

    def to_mongo(self) -> dict[str, Any]:
        """The same conditions as a MongoDB filter on the `movies` documents."""
        query: dict[str, Any] = {}
        if len(self.genres) == 1:
            # Plain equality: FerretDB v1 evaluates `$in` markedly slower than `==`.
            query["genres"] = self.genres[0]
        elif self.genres:
            query["genres"] = {"$in": list(self.genres)}
        years: dict[str, int] = {}
        if self.year_from is not None:
            years["$gte"] = self.year_from
        if self.year_to is not None:
            years["$lte"] = self.year_to
        if years:
            query["release_year"] = years
        if self.language is not None:
            query["original_language"] = self.language
        if self.company is not None:
            query["production_companies"] = self.company
        if self.min_votes is not None:
            query["vote_count"] = {"$gte": self.min_votes}
        return query

    def echo(self) -> dict[str, Any]:
        """The normalized filters as a response shows them."""
        return {
            "genre": list(self.genres),
            "year_from": self.year_from,
            "year_to": self.year_to,
            "language": self.language,
            "company": self.company,
            "min_votes": self.min_votes,
        }
