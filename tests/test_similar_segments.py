"""Similar films (`/v1/movies/{id}/similar`) and segments (`/v1/analytics/segments`) on the
3,804 real train films, checked against an independent computation: the feature space
rebuilt here from the CSV with scikit-learn's own TF-IDF, nearest neighbours by
`NearestNeighbors` (brute-force cosine), k-means refitted here, and every segment's
description recomputed with pandas from the films it holds."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pymongo import AsyncMongoClient
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import MultiLabelBinarizer, normalize

from app.db import Document
from app.main import create_app
from app.services.analytics import Snapshot, load_snapshot
from app.services.analytics.film_space import film_space
from app.services.analytics.segments import assign
from app.services.credentials import Role
from app.services.csv_io import import_tmdb_csv, iter_tmdb_csv
from app.services.indexes import ensure_indexes
from app.services.movies_store import upsert_movies
from app.services.normalize import to_movie
from tests.analytics_support import (
    Catalogue,
    app_settings,
    attach_imdb,
    filtered,
    reference_frame,
    serve,
)
from tests.security_support import user_token
from tests.support import TMDB_TRAIN_CSV, in_process, require_shared

PROBLEM = "application/problem+json"
WEIGHTS = {"genres": 1.0, "keywords": 1.0, "people": 1.0, "era": 0.5, "scale": 0.5}


@pytest.fixture(scope="module")
async def api(
    catalogue: Catalogue, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path_factory.mktemp("similar"))
    async with serve(settings) as http:
        yield http


def _keywords(cell: Any) -> list[str]:
    if not isinstance(cell, str) or not cell.strip():
        return []
    names = (str(item["name"]).strip() for item in json.loads(cell))
    return list(dict.fromkeys(n for n in names if n))


@pytest.fixture(scope="module")
async def ref(catalogue: Catalogue) -> pd.DataFrame:
    df = await attach_imdb(reference_frame(), catalogue.db)
    df["keyword_list"] = df["keywords"].map(_keywords)
    return df


@pytest.fixture(scope="module")
async def snap(catalogue: Catalogue) -> Snapshot:
    """The catalogue as the service reads it (the segment assignment is checked on it)."""
    return await load_snapshot(catalogue.db)


# --- the independent feature space ---------------------------------------------------------------


def _tfidf(lists: list[list[str]], min_df: int) -> sp.csr_matrix:
    binary = MultiLabelBinarizer(sparse_output=True).fit_transform(lists).tocsc()
    df = np.diff(binary.indptr)
    kept = binary[:, np.flatnonzero(df >= min_df)]
    # smooth_idf: ln((1 + n) / (1 + df)) + 1, rows L2-normalized.
    return TfidfTransformer(norm="l2", smooth_idf=True).fit_transform(kept).tocsr()


def _bumps(values: np.ndarray, centers: np.ndarray, sigma: float) -> np.ndarray:
    out = np.zeros((len(values), len(centers)))
    known = ~np.isnan(values)
    v = np.clip(values[known], centers[0], centers[-1])
    z = (v[:, None] - centers[None, :]) / sigma
    out[known] = np.where(np.abs(z) <= 3, np.exp(-0.5 * z**2), 0.0)
    return out


def _log10(series: pd.Series) -> np.ndarray:
    v = series.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(v), np.nan)


def independent_space(df: pd.DataFrame) -> sp.csr_matrix:
    """The documented feature space, rows in `df`'s order."""
    people = sp.hstack(
        [
            _tfidf([list(dict.fromkeys(d)) for d in df["director_list"]], 2),
            _tfidf([a[:5] for a in df["actor_list"]], 2),
        ]
    )
    years = df["release_year"].to_numpy(dtype=float)
    scale = np.hstack(
        [
            _bumps(_log10(df["budget"]), np.arange(3.0, 10.0 + 1e-9, 0.25), 0.35),
            _bumps(_log10(df["revenue"]), np.arange(3.0, 10.0 + 1e-9, 0.25), 0.35),
        ]
    )
    blocks = {
        "genres": _tfidf(list(df["genre_list"]), 1),
        "keywords": _tfidf(list(df["keyword_list"]), 2),
        "people": normalize(people.tocsr()),
        "era": sp.csr_matrix(normalize(_bumps(years, np.arange(1870.0, 2031.0, 5.0), 5.0))),
        "scale": sp.csr_matrix(normalize(scale)),
    }
    weighted = sp.hstack([np.sqrt(WEIGHTS[k]) * b for k, b in blocks.items()]).tocsr()
    return normalize(weighted).tocsr()


@pytest.fixture(scope="module")
def space(ref: pd.DataFrame, snap: Snapshot) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """The reference films in the snapshot's row order, and their independent rows."""
    ordered = ref.loc[snap.ids.tolist()]
    return ordered, independent_space(ordered)


def test_the_service_space_has_the_documented_cosines(
    snap: Snapshot, space: tuple[pd.DataFrame, sp.csr_matrix]
) -> None:
    _, mine = space
    theirs = film_space(snap).matrix
    assert theirs.shape[0] == mine.shape[0] == 3804
    rng = np.random.default_rng(7)
    sample = rng.choice(mine.shape[0], 60, replace=False)
    np.testing.assert_allclose(
        (theirs[sample] @ theirs.T).toarray(), (mine[sample] @ mine.T).toarray(), atol=1e-9
    )
    norms = np.sqrt(np.asarray(theirs.multiply(theirs).sum(axis=1)).ravel())
    assert np.allclose(norms[norms > 0], 1.0) and (norms > 0).mean() > 0.99


# --- similar films -----------------------------------------------------------------------------


async def test_similar_films_are_the_nearest_neighbours(
    api: httpx.AsyncClient, space: tuple[pd.DataFrame, sp.csr_matrix]
) -> None:
    films, mine = space
    ids = films.index.to_numpy()
    nn = NearestNeighbors(metric="cosine", algorithm="brute").fit(mine)
    rng = np.random.default_rng(11)
    rows = [int(np.flatnonzero(ids == i)[0]) for i in (155, 862, 19995)]
    rows += rng.choice(len(ids), 12, replace=False).tolist()
    for row, n in zip(rows, [10, 5, 25] + [10] * 12, strict=True):
        movie_id = int(ids[row])
        response = await api.get(f"/v1/movies/{movie_id}/similar", params={"n": n})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["film"] == {"id": movie_id, "title": films.loc[movie_id, "title"]}
        items = body["items"]
        distance, index = nn.kneighbors(mine[row], n_neighbors=n + 5)
        neighbours = [(1 - d, int(ids[i])) for d, i in zip(distance[0], index[0], strict=True)]
        expected = [s for s, i in neighbours if i != movie_id and s > 1e-12][:n]
        got = [item["score"] for item in items]
        assert len(items) == len(expected)
        np.testing.assert_allclose(got, expected, atol=1e-9)
        cosines = (mine @ mine[row].T).toarray().ravel()
        for item in items:
            assert item["id"] != movie_id
            j = int(np.flatnonzero(ids == item["id"])[0])
            assert item["score"] == pytest.approx(cosines[j], abs=1e-9)
            assert item["title"] == films.loc[item["id"], "title"]
        # Most similar first; equal scores by id.
        keys = [(-item["score"], item["id"]) for item in items]
        assert keys == sorted(keys)


async def test_similar_known_pairs_and_bounds(api: httpx.AsyncClient) -> None:
    dark = (await api.get("/v1/movies/155/similar", params={"n": 3})).json()["items"]
    assert dark[0]["title"] == "The Dark Knight Rises"
    default = (await api.get("/v1/movies/862/similar")).json()["items"]
    assert len(default) == 10 and "Toy Story 2" in {i["title"] for i in default}
    for n in (0, 101, -1):
        response = await api.get("/v1/movies/862/similar", params={"n": n})
        assert response.status_code == 422
        assert response.headers["content-type"].startswith(PROBLEM)
    assert len((await api.get("/v1/movies/862/similar", params={"n": 100})).json()["items"]) == 100
    missing = await api.get("/v1/movies/999999999/similar")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)
    assert "999999999" in missing.json()["detail"]
    assert (await api.get("/v1/movies/0/similar")).status_code == 422


async def test_similar_has_etag_304_and_csv(api: httpx.AsyncClient) -> None:
    first = await api.get("/v1/movies/155/similar", params={"n": 5})
    tag = first.headers["ETag"]
    again = await api.get("/v1/movies/155/similar", params={"n": 5}, headers={"If-None-Match": tag})
    assert again.status_code == 304
    table = await api.get("/v1/movies/155/similar", params={"n": 5, "format": "csv"})
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(table.text.splitlines()))
    assert rows[0] == ["id", "title", "score"] and len(rows) == 6
    assert [int(r[0]) for r in rows[1:]] == [i["id"] for i in first.json()["items"]]


# --- segments ------------------------------------------------------------------------------------


def _decade(year: float) -> int:
    return int(year // 10 * 10)


def _expected_segment(members: pd.DataFrame, films: pd.DataFrame) -> dict[str, Any]:
    """What a segment's description must say, from its films alone (pandas)."""
    n, total = len(members), len(films)
    out: dict[str, Any] = {"size": n}
    for column, top, min_films in (("genre_list", 3, 1), ("keyword_list", 5, 2)):
        inside = {
            str(k): int(c) for k, c in members[column].map(set).explode().value_counts().items()
        }
        overall = {
            str(k): int(c) / total
            for k, c in films[column].map(set).explode().value_counts().items()
        }
        lift = {k: c / n - overall[k] for k, c in inside.items() if c >= min_films}
        ranked = sorted((k for k, v in lift.items() if v > 0), key=lambda k: (-lift[k], k))[:top]
        out[column] = [(k, inside[k] / n, overall[k]) for k in ranked]
    years = members["release_year"].dropna()
    decades = years.map(_decade).value_counts()
    ranked_decades = sorted(decades.index, key=lambda d: (-decades[d], d))[:3]
    out["decades"] = [(int(d), decades[d] / len(years)) for d in ranked_decades]
    for field in ("budget", "revenue"):
        known = members[field].dropna()
        out[field] = float(known.median()) if len(known) else None
    return out


def _check(item: dict[str, Any], expected: dict[str, Any]) -> None:
    assert item["size"] == expected["size"]
    for key, column in (("genres", "genre_list"), ("keywords", "keyword_list")):
        got = [(g["name"], g["share"], g["catalogue_share"]) for g in item[key]]
        assert [g[0] for g in got] == [e[0] for e in expected[column]], key
        for g, e in zip(got, expected[column], strict=True):
            assert g[1:] == pytest.approx(e[1:], rel=1e-9)
    assert [d["decade"] for d in item["decades"]] == [d for d, _ in expected["decades"]]
    assert [d["share"] for d in item["decades"]] == pytest.approx(
        [s for _, s in expected["decades"]], rel=1e-9
    )
    for field in ("budget", "revenue"):
        if expected[field] is None:
            assert item[f"{field}_median"] is None
        else:
            assert item[f"{field}_median"] == pytest.approx(expected[field], rel=1e-12)


@pytest.mark.parametrize(
    "params", [{}, {"k": 5, "year_from": 2000}, {"k": 12, "genre": ["Comedy"]}], ids=str
)
async def test_segments_partition_the_catalogue_and_their_descriptions_match(
    api: httpx.AsyncClient,
    ref: pd.DataFrame,
    snap: Snapshot,
    space: tuple[pd.DataFrame, sp.csr_matrix],
    params: dict[str, Any],
) -> None:
    response = await api.get("/v1/analytics/segments", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    k = params.get("k", 8)
    films = filtered(ref, genres=params.get("genre"), year_from=params.get("year_from"))
    assert body["films"] == len(films) and body["k"] == k
    items = body["items"]
    assert len(items) == k and [s["segment"] for s in items] == list(range(k))
    assert sum(s["size"] for s in items) == len(films)
    sizes = [s["size"] for s in items]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) > 0
    assert sum(s["share"] for s in items) == pytest.approx(1.0)
    assert body["weights"] == WEIGHTS
    assert body["catalogue"]["budget_median"] == pytest.approx(films["budget"].median())

    # The service's assignment on the same snapshot, then every description from its films.
    ordered, mine = space
    rows = np.flatnonzero(ordered.index.isin(films.index))
    labels, _ = assign(snap, rows, k)
    assert np.bincount(labels, minlength=k).tolist() == sizes
    member_ids = ordered.index.to_numpy()[rows]
    for item in items:
        members = films.loc[member_ids[labels == item["segment"]]]
        _check(item, _expected_segment(members, films))
        assert {e["id"] for e in item["examples"]} <= set(members.index)
        assert 1 <= len(item["examples"]) <= 3
        assert item["label"]

    # k-means refitted here on the independent rows finds the same partition.
    mine_labels = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(mine[rows])
    assert adjusted_rand_score(labels, mine_labels) > 0.95


async def test_segments_bounds_etag_and_csv(api: httpx.AsyncClient) -> None:
    for k in (1, 21):
        response = await api.get("/v1/analytics/segments", params={"k": k})
        assert response.status_code == 422
    first = await api.get("/v1/analytics/segments")
    again = await api.get(
        "/v1/analytics/segments", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    assert first.headers["X-Data-Version"] == str(first.json()["data_version"])
    cached = await api.get("/v1/analytics/segments")
    assert cached.headers["X-Analytics-Cache"] == "hit" and cached.content == first.content
    table = await api.get("/v1/analytics/segments", params={"format": "csv"})
    rows = list(csv.DictReader(table.text.splitlines()))
    assert len(rows) == 8
    assert [int(r["size"]) for r in rows] == [s["size"] for s in first.json()["items"]]
    genres = [g["name"] for g in first.json()["items"][0]["genres"]]
    assert rows[0]["genres"] == "|".join(genres)
    nothing = await api.get("/v1/analytics/segments", params={"year_from": 2100})
    assert nothing.status_code == 200 and nothing.json()["items"] == []


# --- rebuilt with the snapshot, and roles ------------------------------------------------------


async def test_a_new_film_is_found_once_the_snapshot_is_rebuilt(
    mongodb_uri: str, tmp_path: Path
) -> None:
    name = f"test_sim_{uuid.uuid4().hex[:10]}"
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    db = client[name]
    try:
        await ensure_indexes(db)
        source = require_shared(TMDB_TRAIN_CSV)
        subset = tmp_path / "subset.csv"
        with source.open(newline="", encoding="utf-8") as src, subset.open("w", newline="") as dst:
            csv.writer(dst).writerows(list(csv.reader(src))[:301])
        await import_tmdb_csv(db, subset)
        row = next(r for _l, r, e in iter_tmdb_csv(subset) if r is not None and not e)
        original = to_movie(row, "tmdb-csv")
        settings = app_settings(mongodb_uri, name, tmp_path, snapshot_check_seconds=0.0)
        async with serve(settings) as http:
            path = f"/v1/movies/{original.id}/similar"
            before = await http.get(path)
            assert before.status_code == 200
            twin_id = 990_000_001
            assert (await http.get(f"/v1/movies/{twin_id}/similar")).status_code == 404
            await upsert_movies(db, [original.model_copy(update={"id": twin_id})])
            for _ in range(100):
                after = await http.get(path)
                if after.headers["X-Data-Version"] != before.headers["X-Data-Version"]:
                    break
                await asyncio.sleep(0.1)
            top = after.json()["items"][0]
            assert top["id"] == twin_id and top["score"] == pytest.approx(1.0)
            twin = await http.get(f"/v1/movies/{twin_id}/similar")
            assert twin.status_code == 200 and twin.json()["items"][0]["id"] == original.id
    finally:
        await client.drop_database(name)
        await client.close()


async def test_similar_and_segments_need_a_viewer(
    catalogue: Catalogue, mongodb_uri: str, tmp_path: Path
) -> None:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path)
    viewer = await user_token(settings, "vic", Role.viewer)
    async with in_process(create_app(settings)) as http:
        for path in ("/v1/movies/155/similar", "/v1/analytics/segments"):
            assert (await http.get(path)).status_code == 401
            allowed = await http.get(path, headers={"Authorization": f"Bearer {viewer}"})
            assert allowed.status_code == 200, allowed.text
