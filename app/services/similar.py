"""Similar films: the nearest neighbours of a film by cosine similarity in the film feature
space (genres, keywords, people, era, scale; see app.services.analytics.film_space), answered
from the analytics snapshot and cached with it like any analytics answer."""

from __future__ import annotations

import numpy as np

from app.errors import NotFoundError
from app.models.similar import FilmRef, SimilarFilm, SimilarResponse
from app.services.analytics.film_space import film_space
from app.services.analytics.snapshot import Snapshot

MAX_N = 100  # the route's bound on n


def similar_films(snap: Snapshot, movie_id: int, n: int) -> SimilarResponse:
    """The `n` films most similar to `movie_id` (404 when the catalogue has no such film)."""
    space = film_space(snap)
    row = space.row_of.get(movie_id)
    if row is None:
        raise NotFoundError(f"no film with id {movie_id}")
    matrix = space.matrix
    scores = np.asarray((matrix @ matrix[row].T).todense()).ravel()
    scores[row] = 0.0  # not its own neighbour
    candidates = np.flatnonzero(scores > 0)
    if candidates.size > n:
        # Only the best n (and whatever ties the n-th) need sorting.
        kth = -np.partition(-scores[candidates], n - 1)[n - 1]
        candidates = candidates[scores[candidates] >= kth]
    ids = snap.ids
    order = candidates[np.lexsort((ids[candidates], -scores[candidates]))][:n]
    return SimilarResponse(
        data_version=snap.version,
        film=FilmRef(id=movie_id, title=snap.titles[row]),
        items=[
            SimilarFilm(id=int(ids[r]), title=snap.titles[r], score=min(float(scores[r]), 1.0))
            for r in order.tolist()
        ],
    )
