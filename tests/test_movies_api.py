"""`/v1/movies` over HTTP on the 3,804 real train films, checked against pandas, on both
search backends: the database (what MongoDB runs) and the analytics snapshot (what FerretDB
runs by default).

Each database listing costs FerretDB v1 a full scan or two (no pushdown there), so these tests
make few requests and check several properties on each."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from app.errors import InvalidQueryError
from app.services.movies_query import decode_cursor, encode_cursor
from app.services.normalize import normalize_title
from tests.analytics_support import (
    Catalogue,
    app_settings,
    filtered,
    reference_frame,
    serve,
)


@pytest.fixture(scope="module", params=["database", "snapshot"])
async def api(
    request: pytest.FixtureRequest,
    catalogue: Catalogue,
    mongodb_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(
        mongodb_uri,
        catalogue.name,
        tmp_path_factory.mktemp("movies"),
        movie_search=request.param,
    )
    async with serve(settings) as http:
        http.headers["X-Expect-Backend"] = request.param  # read back by `page`
        yield http


@pytest.fixture(scope="module")
def ref() -> pd.DataFrame:
    return reference_frame()


def ordered(films: pd.DataFrame, sort: str) -> list[int]:
    """Ids in the service's order: MongoDB puts unknown values first ascending and last
    descending; ties go by id."""
    name = sort.lstrip("-")
    descending = sort.startswith("-")
    known = films[films[name].notna()].sort_values(
        [name, "id"], ascending=[not descending, True], kind="stable"
    )
    unknown = films[films[name].isna()].sort_values("id")
    parts = [known, unknown] if descending else [unknown, known]
    return [int(i) for part in parts for i in part["id"]]


async def page(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await api.get("/v1/movies", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["X-Search-Backend"] == api.headers["X-Expect-Backend"]
    body: dict[str, Any] = response.json()
    return body


async def test_contract_query(api: httpx.AsyncClient, ref: pd.DataFrame) -> None:
    body = await page(api, genre="Action", year_from=2000, year_to=2010, sort="-revenue", limit=5)
    films = filtered(ref, genres=["Action"], year_from=2000, year_to=2010)
    assert body["total"] == len(films)
    assert [m["id"] for m in body["items"]] == ordered(films, "-revenue")[:5]
    first = body["items"][0]
    row = ref.loc[first["id"]]
    assert first["title"] == row["title"] and first["revenue"] == row["revenue"]
    assert first["budget"] == row["budget"] and "Action" in first["genres"]
    assert body["limit"] == 5 and body["offset"] == 0 and body["sort"] == "-revenue"
    assert body["next_cursor"]


async def test_filters_and_unknown_values(api: httpx.AsyncClient, ref: pd.DataFrame) -> None:
    body = await page(
        api,
        company="Pixar Animation Studios",
        min_votes=1000,
        language="EN",
        sort="-vote_average",
        limit=100,
    )
    films = filtered(ref, company="Pixar Animation Studios", min_votes=1000, language="en")
    assert body["total"] == len(films) > 5
    assert [m["id"] for m in body["items"]] == ordered(films, "-vote_average")
    assert body["next_cursor"] is None
    # Unknown amounts are null, never 0.
    assert all(m["budget"] is None or m["budget"] > 0 for m in body["items"])


async def test_title_search_is_case_and_accent_insensitive(
    api: httpx.AsyncClient, ref: pd.DataFrame
) -> None:
    body = await page(api, q="  DARK knight!", sort="-vote_count", limit=10)
    match = ref[ref["title"].map(normalize_title).str.contains("dark knight", regex=False)]
    assert body["total"] == len(match) >= 2
    assert [m["id"] for m in body["items"]] == ordered(match, "-vote_count")
    assert body["items"][0]["title"] == "The Dark Knight"


@pytest.mark.parametrize("sort", ["budget", "-budget"])
async def test_cursor_pages_walk_the_whole_order(
    api: httpx.AsyncClient, ref: pd.DataFrame, sort: str
) -> None:
    films = filtered(ref, language="fr")
    expected = ordered(films, sort)
    assert films["budget"].isna().any()  # exercises the null branches of the cursor
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"language": "fr", "sort": sort, "limit": 25}
        if cursor:
            params["cursor"] = cursor
        body = await page(api, **params)
        assert body["total"] == len(films)
        seen += [m["id"] for m in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        if pages == 2 and sort == "budget":
            # Offset paging agrees with cursor paging.
            offset = await page(api, language="fr", sort=sort, limit=25, offset=25)
            assert [m["id"] for m in offset["items"]] == seen[25:50]
    assert seen == expected
    assert pages == -(-len(films) // 25)


async def test_one_movie(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/movies/19995")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == 19995 and body["title"] == "Avatar"
    assert body["release_date"] == "2009-12-10" and body["revenue"] == 2787965087
    assert body["imdb"]["director"] == "James Cameron"
    assert "content_hash" not in body and "_id" not in body

    missing = await api.get("/v1/movies/999999999")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "movie 999999999 not found"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/movies", {"sort": "title"}, 400),
        ("/v1/movies", {"sort": "--revenue"}, 400),
        ("/v1/movies", {"limit": 0}, 422),
        ("/v1/movies", {"limit": 101}, 422),
        ("/v1/movies", {"offset": -1}, 422),
        ("/v1/movies", {"offset": 10_001}, 422),
        ("/v1/movies", {"cursor": "not-a-cursor"}, 400),
        ("/v1/movies", {"cursor": "eyJmIjoxfQ", "offset": 5}, 400),
        ("/v1/movies", {"q": "?!"}, 400),
        ("/v1/movies", {"q": ""}, 422),
        ("/v1/movies", {"year_from": 2001, "year_to": 2000}, 400),
        ("/v1/movies", {"min_votes": "many"}, 422),
        ("/v1/movies/0", {}, 422),
        ("/v1/movies/abc", {}, 422),
        ("/v1/movies/99999999999999999999999", {}, 422),
    ],
)
async def test_invalid_parameters_are_problems(
    api: httpx.AsyncClient, path: str, params: dict[str, Any], status: int
) -> None:
    response = await api.get(path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_cursor_is_bound_to_its_query(api: httpx.AsyncClient) -> None:
    first = await page(api, q="star", sort="-revenue", limit=2)
    other = await api.get(
        "/v1/movies", params={"q": "star", "sort": "revenue", "cursor": first["next_cursor"]}
    )
    assert other.status_code == 400
    assert "different" in other.json()["detail"]


def _payload(cursor: str) -> Any:
    part = cursor.partition(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _unsigned(payload: Any) -> str:
    """A cursor in the old, unsigned format: base64url of its JSON."""
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _flip(text: str, at: int) -> str:
    return text[:at] + ("B" if text[at] != "B" else "C") + text[at + 1 :]


def forged_cursors(genuine: str) -> dict[str, str]:
    """Ways to forge a cursor from a genuine one."""
    real = _payload(genuine)
    payload, _, signature = genuine.partition(".")
    huge = {**real, "v": 2**70}
    return {
        "unsigned, valid-looking": _unsigned(real),
        "unsigned, huge value": _unsigned(huge),
        "unsigned, value beyond float": _unsigned({**real, "v": 10**309}),
        "unsigned, huge id": _unsigned({**real, "i": 2**64}),
        "unsigned, wrong types": _unsigned({**real, "i": "19995", "v": "1e9"}),
        "unsigned, list": _unsigned([real["f"], real["i"], real["v"]]),
        "edited payload, genuine signature": f"{_unsigned(huge)}.{signature}",
        "flipped payload byte": f"{_flip(payload, len(payload) // 2)}.{signature}",
        "flipped signature byte": f"{payload}.{_flip(signature, 5)}",
        "signed with another key": encode_cursor(real["i"], 2**70, real["f"], b"other key"),
        "truncated": genuine[:-4],
        "garbage": "!!not-base64!!",
    }


@pytest.mark.parametrize("sort", ["-budget", "popularity"])
async def test_forged_cursors_are_400_problems(api: httpx.AsyncClient, sort: str) -> None:
    """Cursors are signed: an edited, unsigned or foreign one is refused as a bad request
    (unsigned ones carrying integers beyond 64 bits used to reach the database: 500)."""
    params: dict[str, Any] = {"sort": sort, "limit": 3, "language": "fr"}
    genuine = (await page(api, **params))["next_cursor"]
    assert genuine
    for name, cursor in forged_cursors(genuine).items():
        response = await api.get("/v1/movies", params={**params, "cursor": cursor})
        assert response.status_code == 400, (name, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        assert "cursor" in response.json()["detail"], name
    assert len((await page(api, **params, cursor=genuine))["items"]) == 3


KEY = b"test cursor key"


@pytest.mark.parametrize(
    ("sort_field", "last_id", "value"),
    [
        ("budget", 1, 2**63),  # beyond BSON's int64
        ("budget", 1, -(2**63) - 1),
        ("budget", 1, 1.5),  # a float where the field holds integers
        ("budget", 1, True),
        ("budget", 0, 5),
        ("budget", 2**63, 5),
        ("budget", 1.0, 5),
        ("popularity", 1, 5),  # an integer where the field holds floats
        ("popularity", 1, float("inf")),
        ("popularity", 1, float("nan")),
        ("popularity", 1, "5.0"),
    ],
)
def test_signed_cursor_values_are_still_range_and_type_checked(
    sort_field: str, last_id: Any, value: Any
) -> None:
    """Even a cursor signed with the right key (should the key leak) cannot carry values the
    query could not take."""
    cursor = encode_cursor(last_id, value, "fp", KEY)
    with pytest.raises(InvalidQueryError, match="cursor"):
        decode_cursor(cursor, "fp", sort_field, KEY)


@pytest.mark.parametrize(
    ("sort_field", "value"),
    [("budget", 2**63 - 1), ("budget", -(2**63)), ("budget", None), ("popularity", 7.25)],
)
def test_cursor_round_trip(sort_field: str, value: Any) -> None:
    cursor = encode_cursor(19995, value, "fp", KEY)
    assert decode_cursor(cursor, "fp", sort_field, KEY) == (value, 19995)


async def test_openapi_documents_movies(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    for path, errors in (("/v1/movies", ("400", "422")), ("/v1/movies/{movie_id}", ("404",))):
        op = spec["paths"][path]["get"]
        assert op["summary"] and op["description"]
        assert "$ref" in op["responses"]["200"]["content"]["application/json"]["schema"]
        for status in errors:
            assert "application/problem+json" in op["responses"][status]["content"]


PATIENT: dict[str, Any] = {"request_timeout_seconds": 0, "mongodb_timeout_ms": 30_000}


async def test_backends_agree_page_by_page_and_share_cursors(
    catalogue: Catalogue, mongodb_uri: str, tmp_path: Path
) -> None:
    """Same items, totals and cursors from both backends, and a cursor issued by one continues
    on the other (a deployment can switch backends under a paging client)."""
    queries: list[dict[str, Any]] = [
        {"sort": "-popularity", "limit": 7},
        {"sort": "roi", "limit": 4, "genre": ["Drama", "Horror"], "min_votes": 10},
        {"sort": "-runtime", "limit": 3, "q": "the", "year_from": 1990},
        {"sort": "id", "limit": 5, "company": "Pixar Animation Studios"},
        {"sort": "-release_year", "limit": 3, "language": "ja"},
    ]
    async with (
        # No response deadline and a long socket timeout: on a loaded machine FerretDB's
        # unindexed sorts (while two snapshots are read) can outlast both defaults, and this
        # test is about agreement, not speed.
        serve(
            app_settings(
                mongodb_uri,
                catalogue.name,
                tmp_path / "d",
                movie_search="database",
                **PATIENT,
            )
        ) as database,
        serve(app_settings(mongodb_uri, catalogue.name, tmp_path / "s", **PATIENT)) as snapshot,
    ):
        for params in queries:
            db_page = await database.get("/v1/movies", params=params)
            snap_page = await snapshot.get("/v1/movies", params=params)
            assert snap_page.headers["X-Search-Backend"] == "snapshot"  # `auto` on FerretDB
            assert snap_page.headers["X-Analytics-Cache"] in ("hit", "miss")
            assert db_page.headers["X-Search-Backend"] == "database"
            assert snap_page.json() == db_page.json(), params
            cursor = snap_page.json()["next_cursor"]
            assert cursor
            crossed = await database.get("/v1/movies", params={**params, "cursor": cursor})
            native = await snapshot.get("/v1/movies", params={**params, "cursor": cursor})
            assert crossed.json() == native.json(), params
            assert int(snap_page.headers["X-Data-Version"]) >= 1
