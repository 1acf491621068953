"""Browser-ready reads: CSV answers (the same rows as JSON, on the real films), entity tags and
304s, content negotiation, and CORS, in process against a real database."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.authn import JWT_ISSUER, issue_token
from app.conditional_memo import ConditionalMemo
from app.db import Document
from app.http_cache import ANSWERED_BEFORE_ROUTING, NOT_MODIFIED, entity_tag, negotiate, none_match
from app.localdb import LocalServer, free_port
from app.main import create_app
from app.models.movie import MovieDocument
from app.services.credentials import Role, create_api_key, create_user, revoke_api_key
from app.services.movies_store import upsert_movies
from app.services.normalize import to_movie
from app.services.tabular import cell
from app.settings import Settings
from tests.analytics_support import API_KEY, Catalogue, app_settings, serve
from tests.dashboard_support import dashboard_body
from tests.security_support import (
    ADMIN_KEY,
    JWT_SECRET,
    api_key,
    bearer,
    security_settings,
    user_token,
)
from tests.support import assert_problem, in_process

FORMULA = ("=", "+", "-", "@", "\t", "\r")

# Every analytics endpoint (checked against the app's routes below) and film search.
READS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/analytics/summary", {"genre": "Drama"}),
    ("/v1/analytics/genres", {"year_from": 2000}),
    ("/v1/analytics/trends", {"by": "decade"}),
    ("/v1/analytics/seasonality", {}),
    ("/v1/analytics/top", {"metric": "roi", "n": 25}),
    ("/v1/analytics/distribution", {"field": "budget", "scale": "log", "bins": 12}),
    ("/v1/analytics/correlations", {"method": "spearman"}),
    ("/v1/analytics/people", {"role": "actor", "sort": "revenue", "n": 30}),
    ("/v1/analytics/companies", {"sort": "revenue", "n": 15}),
    ("/v1/analytics/languages", {}),
    ("/v1/analytics/segments", {"k": 4}),
    ("/v1/movies", {"genre": "Drama", "sort": "-revenue", "limit": 50}),
]


@pytest.fixture(scope="module", params=["database", "snapshot"])
async def api(
    request: pytest.FixtureRequest,
    catalogue: Catalogue,
    mongodb_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[httpx.AsyncClient]:
    """The real films, film search on either backend (`database` is MongoDB's path)."""
    settings = app_settings(
        mongodb_uri,
        catalogue.name,
        tmp_path_factory.mktemp("http-cache"),
        movie_search=request.param,
        http_cache_seconds=17,
    )
    async with serve(settings) as http:
        yield http


# --- CSV ---------------------------------------------------------------------------------


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "_"))
        elif isinstance(value, list):
            # Objects in a list (a segment's genres) by their first member, the name.
            out[name] = "|".join(
                str(next(iter(v.values()))) if isinstance(v, dict) and v else str(v) for v in value
            )
        else:
            out[name] = value
    return out


def expected_table(body: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """What the CSV must hold, written independently from the JSON answer."""
    if "items" in body:
        items = [_flat(item) for item in body["items"]]
        header = list(items[0]) if items else []
        return header, [list(item.values()) for item in items]
    if "edges" in body:
        edges = body["edges"]
        return ["bin_start", "bin_end", "count"], [
            [edges[i], edges[i + 1], c] for i, c in enumerate(body["counts"])
        ]
    if "matrix" in body:
        return ["field", *body["fields"]], [
            [name, *row] for name, row in zip(body["fields"], body["matrix"], strict=True)
        ]
    flat = _flat({k: v for k, v in body.items() if k not in ("data_version", "filters")})
    return list(flat), [list(flat.values())]


def same_cell(text: str, value: Any) -> bool:
    if value is None:
        return text == ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(text) == float(value)
    string = str(value)
    return text == ("'" + string if string.startswith(FORMULA) else string)


def parse_csv(response: httpx.Response) -> list[list[str]]:
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(response.content.decode("utf-8"))))


def test_every_analytics_endpoint_is_covered() -> None:
    paths = set(create_app(Settings(app_env="test")).openapi()["paths"])
    analytics = {p for p in paths if p.startswith("/v1/analytics/")}
    assert analytics == {p for p, _ in READS if p.startswith("/v1/analytics/")}


@pytest.mark.parametrize(("path", "params"), READS, ids=[p for p, _ in READS])
async def test_csv_has_the_rows_of_the_json(
    api: httpx.AsyncClient, path: str, params: dict[str, Any]
) -> None:
    as_json = await api.get(path, params=params)
    by_param = await api.get(path, params={**params, "format": "csv"})
    by_accept = await api.get(path, params=params, headers={"Accept": "text/csv"})
    assert as_json.status_code == by_param.status_code == by_accept.status_code == 200
    assert by_param.content == by_accept.content
    body = as_json.json()
    header, rows = expected_table(body)
    table = parse_csv(by_param)
    assert table[0] == header
    assert len(table) - 1 == len(rows) > 0
    for got, want in zip(table[1:], rows, strict=True):
        assert len(got) == len(want)
        for text, value, name in zip(got, want, header, strict=True):
            assert same_cell(text, value), (path, name, text, value)
    name = path.rsplit("/", 1)[-1]
    version = as_json.headers["x-data-version"]
    assert by_param.headers["content-disposition"] == (
        f'attachment; filename="{name}-v{version}.csv"'
    )
    assert by_param.headers["x-data-version"] == version
    # Nested statistics are flattened as <field>_<stat>.
    if path.endswith(("/genres", "/companies", "/languages", "/trends", "/seasonality")):
        assert {"revenue_mean", "revenue_median", "roi_p75", "runtime_n"} <= set(header)


async def test_negotiation(api: httpx.AsyncClient) -> None:
    path = "/v1/analytics/genres"
    cases = {
        "text/csv;q=0.5, application/json": "application/json",
        "application/json;q=0.2, text/csv": "text/csv",
        "text/*": "text/csv",
        "*/*": "application/json",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": "application/json",
        "text/*, application/json;q=0": "text/csv",
    }
    for accept, media in cases.items():
        answer = await api.get(path, headers={"Accept": accept})
        assert answer.status_code == 200, accept
        assert answer.headers["content-type"].startswith(media), accept
    for accept in ("application/xml", "text/html", "*/*;q=0", "application/json;q=0, text/*;q=0"):
        refused = await api.get(path, headers={"Accept": accept})
        body = assert_problem(refused, 406)
        assert "text/csv" in body["detail"]
    # `format` wins over Accept, both ways.
    forced = await api.get(path, params={"format": "csv"}, headers={"Accept": "application/xml"})
    assert forced.headers["content-type"].startswith("text/csv")
    forced = await api.get(path, params={"format": "json"}, headers={"Accept": "text/csv"})
    assert forced.headers["content-type"] == "application/json"
    assert_problem(await api.get(path, params={"format": "xlsx"}), 422)


# --- entity tags and 304 ---------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params"), READS, ids=[p for p, _ in READS])
async def test_conditional_get(api: httpx.AsyncClient, path: str, params: dict[str, Any]) -> None:
    first = await api.get(path, params=params)
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert first.headers["cache-control"] == "private, max-age=17, must-revalidate"
    assert first.headers["vary"] == "Accept, Authorization, X-API-Key"
    assert (await api.get(path, params=params)).headers["etag"] == tag
    for header in (tag, f"W/{tag}", f'"nope", {tag}', f'W/"x,y", W/{tag}', "*"):
        again = await api.get(path, params=params, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert "content-type" not in again.headers
        assert again.headers["etag"] == tag
        assert again.headers["cache-control"] == first.headers["cache-control"]
        assert again.headers["vary"] == first.headers["vary"]
        assert again.headers["x-data-version"] == first.headers["x-data-version"]
    for header in ('"nope"', tag[:-2] + '"', "W/nope", "", tag.strip('"')):
        full = await api.get(path, params=params, headers={"If-None-Match": header})
        assert full.status_code == 200, header
        assert full.content == first.content
    csv_answer = await api.get(path, params={**params, "format": "csv"})
    assert csv_answer.headers["etag"] != tag
    not_json = await api.get(
        path, params={**params, "format": "csv"}, headers={"If-None-Match": tag}
    )
    assert not_json.status_code == 200  # the JSON tag does not validate the CSV


async def test_tags_follow_the_normalized_query(api: httpx.AsyncClient) -> None:
    path = "/v1/analytics/genres"

    async def tag(query: str) -> str:
        answer = await api.get(f"{path}?{query}")
        assert answer.status_code == 200
        return answer.headers["etag"]

    same = await tag("genre=Drama&genre=Action&language=en")
    assert await tag("language=EN&genre=Action&genre=Drama&genre=Action") == same
    assert await tag("genre=Drama&language=en") != same
    assert await tag("") != same


def test_none_match_and_negotiate_units() -> None:
    tag = entity_tag(3, "json", "x")
    assert entity_tag(3, "json", "x") == tag != entity_tag(4, "json", "x")
    assert entity_tag(3, "csv", "x") != tag
    assert none_match(f" W/{tag} ", tag)
    assert none_match(f'"a,b", {tag}', tag)
    assert not none_match(None, tag)
    assert not none_match(f"W/{tag[1:]}", tag)
    assert none_match(tag, f"W/{tag}")  # a weak current tag matches its strong spelling too
    assert negotiate(None) == negotiate("") == negotiate("garbage") == "json"
    assert negotiate("text/csv; charset=utf-8") == "csv"
    assert negotiate("application/xml", "csv") == "csv"


# --- tags change with the data; CSV injection ------------------------------------------------


def movie(movie_id: int, title: str, **fields: Any) -> MovieDocument:
    record: dict[str, Any] = {
        "id": movie_id,
        "title": title,
        "release_date": "2004-06-01",
        "genres": [{"id": 18, "name": "Drama"}],
        "original_language": "en",
        "budget": 1_000_000,
        "revenue": 10_000_000 + movie_id,
        "vote_count": 10,
        "vote_average": 6.5,
        "popularity": float(movie_id),
        **fields,
    }
    return to_movie(record, "tmdb-api")


TRAPS = [
    '=HYPERLINK("http://evil.example","click")',
    "+SUM(1,2)",
    "-2+3",
    "@cmd",
    "Plain, with comma",
]


@pytest.mark.parametrize("backend", ["database", "snapshot"])
async def test_a_write_changes_the_tags(
    db: AsyncDatabase[Document], settings: Settings, backend: str
) -> None:
    await upsert_movies(db, [movie(i, title) for i, title in enumerate(TRAPS, start=1)])
    app = create_app(
        settings.model_copy(
            update={
                "admin_api_key": API_KEY,
                "snapshot_check_seconds": 0.0,
                "movie_search": backend,
            }
        )
    )
    async with in_process(app, headers={"X-API-Key": API_KEY}) as http:
        engine = app.state.app_state.analytics
        await engine.settled()
        paths = ["/v1/analytics/summary", "/v1/analytics/top?metric=revenue", "/v1/movies"]
        before = {p: (await http.get(p)).headers["etag"] for p in paths}

        # Text cells that a spreadsheet would evaluate are quoted; numbers stay numbers.
        for path in ("/v1/analytics/top?metric=revenue&format=csv", "/v1/movies?format=csv"):
            table = parse_csv(await http.get(path))
            titles = {row[table[0].index("title")] for row in table[1:]}
            assert titles == {"'" + t if t.startswith(FORMULA) else t for t in TRAPS}
            assert not any(t.startswith(FORMULA) for t in titles)

        await upsert_movies(db, [movie(99, "A new film")])
        await engine.snapshot()  # notices the new version and starts a rebuild
        await engine.settled()
        for path in paths:
            stale = await http.get(path, headers={"If-None-Match": before[path]})
            assert stale.status_code == 200, path
            assert stale.headers["etag"] != before[path]
            assert int(stale.headers["x-data-version"]) > int(before[path][1:].split("-")[0])
        assert "A new film" in (await http.get("/v1/movies")).text


def test_cells() -> None:
    assert cell(None) == ""
    assert cell(-3.5) == -3.5  # a negative number is a number, not a formula
    assert cell("-3.5") == "'-3.5"
    assert cell("\tx") == "'\tx"
    assert cell(["=A", "B"]) == "'=A|B"
    assert cell(True) == "true"


# --- CORS ------------------------------------------------------------------------------------

FRONT = "http://front.example:8080"
OTHER = "http://evil.example"


def _cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


async def cors_app(settings: Settings, origins: str) -> Any:
    return create_app(
        settings.model_copy(
            update={
                "admin_api_key": API_KEY,
                "cors_origins": origins,
                "rate_limit_per_minute": 3,
            }
        )
    )


async def test_cors_allowed_origin(settings: Settings) -> None:
    app = await cors_app(settings, f"{FRONT}/, https://other.example")
    async with in_process(app) as http:
        preflight_headers = {
            "Origin": FRONT,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-api-key, if-none-match",
        }
        # No credential, and far more preflights than the anonymous budget (3 a minute).
        for _ in range(10):
            pre = await http.options("/v1/analytics/genres", headers=preflight_headers)
            assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == FRONT
        allowed = {
            h.strip().lower() for h in pre.headers["access-control-allow-headers"].split(",")
        }
        assert {
            "authorization",
            "x-api-key",
            "if-none-match",
            "if-match",
            "content-type",
        } <= allowed
        assert "GET" in pre.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in pre.headers
        assert pre.headers["x-request-id"]
        # The preflights spent nothing: an anonymous request still gets its 401, not a 429.
        assert_problem(await http.get("/v1/analytics/genres", headers={"Origin": FRONT}), 401)

        got = await http.get(
            "/v1/analytics/genres", headers={"Origin": FRONT, "X-API-Key": API_KEY}
        )
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == FRONT
        exposed = {h.strip() for h in got.headers["access-control-expose-headers"].split(",")}
        assert {
            "ETag",
            "X-Data-Version",
            "X-Analytics-Cache",
            "X-Data-Stale",
            "X-Request-Id",
            "Retry-After",
            "Link",
        } <= exposed
        assert "access-control-allow-credentials" not in got.headers
        assert "Origin" in got.headers["vary"] and "Accept" in got.headers["vary"]
        # Errors are readable by the page too (its script can show the problem).
        for _ in range(4):
            limited = await http.get("/v1/nope", headers={"Origin": FRONT})
        assert limited.status_code == 429
        assert limited.headers["access-control-allow-origin"] == FRONT


async def test_cors_other_origins_get_nothing(settings: Settings) -> None:
    for origins in (FRONT, ""):
        app = await cors_app(settings, origins)
        async with in_process(app) as http:
            got = await http.get(
                "/v1/analytics/genres", headers={"Origin": OTHER, "X-API-Key": API_KEY}
            )
            assert got.status_code == 200
            assert _cors_headers(got) == {}, origins
            pre = await http.options(
                "/v1/analytics/genres",
                headers={"Origin": OTHER, "Access-Control-Request-Method": "GET"},
            )
            assert _cors_headers(pre) == {}, origins
            if origins:
                detail = assert_problem(pre, 400)["detail"]
                assert "origin" in detail.lower()
            else:
                assert pre.status_code == 405  # no CORS at all: OPTIONS is just not allowed


# --- 304 before routing ----------------------------------------------------------------------


async def test_304_before_routing_checks_the_credential(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    """A remembered answer is 304 only for a credential the routes would accept."""
    await upsert_movies(db, [movie(1, "One"), movie(2, "Two")])
    record, key = await create_api_key(db, "reader", Role.viewer)
    app = create_app(security_settings(settings, rate_limit_per_minute=1000))
    async with in_process(app) as http:
        state = app.state.app_state
        await state.analytics.settled()
        path = "/v1/analytics/genres"
        first = await http.get(path, headers=api_key(key))
        tag = first.headers["etag"]
        assert state.conditional.get(_scope(path)) is not None  # remembered

        before_routing = NOT_MODIFIED.labels("memo")._value.get()
        hit = await http.get(path, headers={**api_key(key), "If-None-Match": tag})
        assert hit.status_code == 304 and hit.content == b""
        assert NOT_MODIFIED.labels("memo")._value.get() == before_routing + 1
        assert hit.headers["etag"] == tag and hit.headers["x-request-id"]
        ann = await create_user(db, "ann", Role.viewer, "correct horse battery staple")
        token, _ = issue_token(
            app.state.app_state.settings, "ann", Role.viewer, version=ann.token_version
        )
        assert (
            await http.get(path, headers={**bearer(token), "If-None-Match": tag})
        ).status_code == 304
        # Counted under its route, as a routed request would be.
        metrics = (await http.get("/metrics")).text
        assert f'route="{path}",status="304"' in metrics

        expired = jwt.encode(
            {"sub": "ann", "role": "viewer", "iss": JWT_ISSUER, "iat": 1, "exp": 2},
            JWT_SECRET,
            algorithm="HS256",
        )
        for headers in ({}, api_key("tmdb_nope"), bearer(expired), bearer("garbage")):
            refused = await http.get(path, headers={**headers, "If-None-Match": tag})
            assert_problem(refused, 401)
        await revoke_api_key(db, record.key_id)
        revoked = await http.get(path, headers={**api_key(key), "If-None-Match": tag})
        assert_problem(revoked, 401)


def _scope(path: str, query: bytes = b"") -> dict[str, Any]:
    return {"path": path, "query_string": query, "headers": [(b"accept", b"*/*")]}  # httpx's


async def test_304_before_routing_spends_the_rate_budget(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    await upsert_movies(db, [movie(1, "One")])
    app = create_app(security_settings(settings, rate_limit_per_minute=3))
    async with in_process(app, headers=api_key(ADMIN_KEY)) as http:
        await app.state.app_state.analytics.settled()
        tag = (await http.get("/v1/analytics/summary")).headers["etag"]
        answers = [
            await http.get("/v1/analytics/summary", headers={"If-None-Match": tag})
            for _ in range(3)
        ]
        # One 200 and two 304s spend the budget of 3: the next one is refused.
        assert [a.status_code for a in answers[:2]] == [304, 304]
        assert_problem(answers[2], 429)
        assert answers[2].headers["retry-after"]


# --- warm 200s before routing ------------------------------------------------------------------


def _before_routing(status: str) -> float:
    value: float = ANSWERED_BEFORE_ROUTING.labels(status)._value.get()
    return value


def _same_answer(memo: httpx.Response, routed: httpx.Response) -> None:
    """The same status, bytes and headers (all but the request id)."""
    assert memo.status_code == routed.status_code == 200
    assert memo.content == routed.content
    strip = {"x-request-id"}
    assert [(k, v) for k, v in memo.headers.multi_items() if k not in strip] == [
        (k, v) for k, v in routed.headers.multi_items() if k not in strip
    ]


@pytest.mark.parametrize("backend", ["database", "snapshot"])
async def test_warm_200_before_routing_is_the_routed_answer(
    db: AsyncDatabase[Document], settings: Settings, backend: str
) -> None:
    """A repeated GET is answered before routing with the bytes and headers the route sends
    (JSON and CSV, analytics and snapshot search), until the snapshot changes."""
    await upsert_movies(db, [movie(1, "One"), movie(2, "Two")])
    app = create_app(
        security_settings(
            settings, rate_limit_per_minute=1000, snapshot_check_seconds=0.0, movie_search=backend
        )
    )
    async with in_process(app, headers=api_key(ADMIN_KEY)) as http:
        engine = app.state.app_state.analytics
        await engine.settled()
        paths = [
            "/v1/analytics/genres?year_from=1990",
            "/v1/analytics/top?metric=revenue&format=csv",
            "/v1/movies?sort=-revenue",
        ]
        for path in paths:
            first = await http.get(path)
            assert first.status_code == 200, first.text
            memo_before = _before_routing("200")
            memo = await http.get(path)
            # A non-matching If-None-Match goes through the route: the reference answer.
            routed = await http.get(path, headers={"If-None-Match": '"other"'})
            served_from_memo = _before_routing("200") - memo_before
            if path.startswith("/v1/movies") and backend == "database":
                # Database search answers are not from the snapshot: always routed.
                assert served_from_memo == 0
                continue
            assert served_from_memo == 1, path
            _same_answer(memo, routed)
            assert memo.headers["x-analytics-cache"] == "hit"
            if "format=csv" in path:
                assert memo.headers["content-disposition"].startswith("attachment")
        # Counted under its route, as a routed request would be.
        metrics = (await http.get("/metrics")).text
        assert 'route="/v1/analytics/genres",status="200"' in metrics

        # Another Accept is another answer: routed the first time, remembered apart.
        as_csv = await http.get(paths[0], headers={"Accept": "text/csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert (await http.get(paths[0])).headers["content-type"] == "application/json"

        # A write: the next request sees the new snapshot, never the remembered bytes.
        old = await http.get(paths[0])
        await upsert_movies(db, [movie(3, "Three")])
        await engine.snapshot()  # notices the new version and starts a rebuild
        await engine.settled()
        memo_before = _before_routing("200")
        new = await http.get(paths[0])
        assert _before_routing("200") == memo_before  # routed: the old answer is gone
        assert new.headers["etag"] != old.headers["etag"]
        assert int(new.headers["x-data-version"]) > int(old.headers["x-data-version"])
        assert new.headers["x-analytics-cache"] == "miss"


async def test_warm_200_before_routing_checks_the_credential(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    """Before routing, a remembered 200 goes only to a credential the routes accept; every
    other request gets what the route answers (401), never the remembered bytes."""
    await upsert_movies(db, [movie(1, "One")])
    record, key = await create_api_key(db, "reader", Role.viewer)
    app = create_app(security_settings(settings, rate_limit_per_minute=1000))
    async with in_process(app) as http:
        await app.state.app_state.analytics.settled()
        path = "/v1/analytics/summary"
        assert (await http.get(path, headers=api_key(key))).status_code == 200
        memo_before = _before_routing("200")
        assert (await http.get(path, headers=api_key(key))).status_code == 200
        token = await user_token(app.state.app_state.settings, "ann", Role.viewer)
        assert (await http.get(path, headers=bearer(token))).status_code == 200
        assert _before_routing("200") == memo_before + 2
        for headers in ({}, api_key("tmdb_nope"), bearer("garbage")):
            assert_problem(await http.get(path, headers=headers), 401)
        await revoke_api_key(db, record.key_id)
        assert_problem(await http.get(path, headers=api_key(key)), 401)
        assert _before_routing("200") == memo_before + 2


async def test_warm_200_before_routing_spends_the_rate_budget(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    await upsert_movies(db, [movie(1, "One")])
    app = create_app(security_settings(settings, rate_limit_per_minute=3))
    async with in_process(app, headers=api_key(ADMIN_KEY)) as http:
        await app.state.app_state.analytics.settled()
        answers = [await http.get("/v1/analytics/summary") for _ in range(4)]
        assert [a.status_code for a in answers[:3]] == [200, 200, 200]
        assert_problem(answers[3], 429)


async def test_warm_200_before_routing_says_when_it_is_stale(tmp_path: Path) -> None:
    """While the database is down, a remembered 200 says `X-Data-Stale: true`, as the route
    does; it was remembered before the outage, without it."""
    if os.environ.get("TEST_MONGODB_URI"):
        pytest.skip("needs a database of its own to stop")
    server = LocalServer(directory=tmp_path / "db", port=free_port())
    await asyncio.to_thread(server.start)
    try:
        settings = Settings(
            app_env="test",
            mongodb_uri=server.uri,
            mongodb_db="stale",
            mongodb_timeout_ms=300,
            jwt_secret=JWT_SECRET,
            admin_api_key=ADMIN_KEY,
            snapshot_check_seconds=0.0,
            local_db_dir=tmp_path / "unused",
        )
        seed: AsyncMongoClient[Document] = AsyncMongoClient(server.uri)
        try:
            await upsert_movies(seed["stale"], [movie(1, "One")])
        finally:
            await seed.close()
        app = create_app(settings)
        async with in_process(app, headers=api_key(ADMIN_KEY)) as http:
            await app.state.app_state.analytics.settled()
            path = "/v1/analytics/summary"
            fresh = await http.get(path)
            assert "x-data-stale" not in fresh.headers
            await asyncio.to_thread(server.stop)
            deadline = time.monotonic() + 10
            memo_before = _before_routing("200")
            stale = await http.get(path)
            while "x-data-stale" not in stale.headers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                stale = await http.get(path)
            assert _before_routing("200") > memo_before  # answered before routing
            assert stale.headers["x-data-stale"] == "true"
            assert stale.content == fresh.content
            routed = await http.get(path, headers={"If-None-Match": '"other"'})
            assert routed.headers["x-data-stale"] == "true"
            assert sorted(k for k, _ in stale.headers.multi_items()) == sorted(
                k for k, _ in routed.headers.multi_items()
            )
    finally:
        await asyncio.to_thread(server.stop)


def test_memo_bounds_its_bodies() -> None:
    """Bodies count against a byte budget (least recently remembered dropped first); one
    over the per-answer limit is not kept; a new answer of a query replaces the old."""
    memo = ConditionalMemo(max_entries=10, max_body_bytes=100, max_total_body_bytes=250)
    head = ((b"content-type", b"application/json"),)
    scopes = [_scope("/v1/analytics/summary", f"n={i}".encode()) for i in range(4)]
    for i, scope in enumerate(scopes[:3]):
        entry = memo.remember(scope, f'"t{i}"', 1, {})
        memo.keep_body(scope, entry, head, b"x" * 100)
    # 300 bytes > 250: the first remembered one went.
    assert memo.get(scopes[0]) is None and memo.body_bytes == 200
    big = memo.remember(scopes[3], '"big"', 1, {})
    memo.keep_body(scopes[3], big, head, b"x" * 101)
    assert big.body is None and memo.body_bytes == 200
    # A later answer of the same query replaces the entry, and its body with it.
    replaced = memo.get(scopes[1])
    assert replaced is not None
    newer = memo.remember(scopes[1], '"t1b"', 2, {})
    assert memo.body_bytes == 100
    memo.keep_body(scopes[1], replaced, head, b"y" * 10)  # not the current entry: ignored
    assert newer.body is None and memo.body_bytes == 100
    memo.forget(scopes[2])
    assert memo.body_bytes == 0 and len(memo) == 2


async def test_dashboard_widgets_take_no_format(settings: Settings) -> None:
    """Widgets draw JSON: `format` is a parameter of the endpoints, not of a widget."""
    app = create_app(settings.model_copy(update={"admin_api_key": API_KEY}))
    async with in_process(app, headers={"X-API-Key": API_KEY}) as http:
        body = dashboard_body()
        body["widgets"][0]["params"] = {"format": "csv"}
        refused = assert_problem(await http.post("/v1/dashboards", json=body), 422)
        assert refused["errors"][0]["field"] == "widgets[0].params.format"
