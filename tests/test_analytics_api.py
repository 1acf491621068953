"""`/v1/analytics/*` over HTTP on the 3,804 real train films, every aggregate checked against
an independent pandas computation on the same CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.analytics_support import (
    MONEY,
    Catalogue,
    app_settings,
    as_float_list,
    assert_economics,
    assert_stats,
    attach_imdb,
    filtered,
    reference_frame,
    serve,
)


@pytest.fixture(scope="module")
async def api(
    catalogue: Catalogue, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path_factory.mktemp("analytics"))
    async with serve(settings) as http:
        yield http


@pytest.fixture(scope="module")
async def ref(catalogue: Catalogue) -> pd.DataFrame:
    return await attach_imdb(reference_frame(), catalogue.db)


async def get(api: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


FILTER_CASES = [
    {},
    {"year_from": 2000, "year_to": 2010},
    {"genre": ["Action", "Comedy"], "language": "en", "min_votes": 100},
    {"company": "Warner Bros.", "year_from": 1990},
    {"genre": ["Animation"], "min_votes": 1000},
]


def _ref_filter(df: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    return filtered(
        df, genres=params.get("genre"), **{k: v for k, v in params.items() if k != "genre"}
    )


@pytest.mark.parametrize("params", FILTER_CASES)
async def test_summary(api: httpx.AsyncClient, ref: pd.DataFrame, params: dict[str, Any]) -> None:
    body = await get(api, "/v1/analytics/summary", **params)
    films = _ref_filter(ref, params)
    assert body["catalogue_films"] == 3804
    assert body["films"] == len(films)
    for name in ("budget", "revenue", "profit", "runtime", "vote_average", "imdb_score"):
        assert body["coverage"][name]["known"] == films[name].notna().sum(), name
    assert body["coverage"]["genres"]["known"] == (films["genre_list"].map(len) > 0).sum()
    assert body["with_budget_and_revenue"] == films["profit"].notna().sum()
    for name in MONEY:
        assert body["totals"][name] == pytest.approx(films[name].sum(), rel=1e-12)
    assert body["year_min"] == films["release_year"].min()
    assert body["year_max"] == films["release_year"].max()
    assert body["distinct"]["genres"] == films["genre_list"].explode().dropna().nunique()
    assert body["distinct"]["languages"] == films["original_language"].nunique()
    assert body["distinct"]["companies"] == films["company_list"].explode().dropna().nunique()


async def test_unknown_money_is_never_zero(api: httpx.AsyncClient, ref: pd.DataFrame) -> None:
    body = await get(api, "/v1/analytics/genres")
    for item in body["items"]:
        for name in MONEY[:2]:
            block = item[name]
            assert block["n"] <= item["count"]
            assert block["min"] is None or block["min"] > 0, (item["genre"], name)
    summary = await get(api, "/v1/analytics/summary")
    assert summary["coverage"]["budget"]["known"] == ref["budget"].notna().sum() < 3804


@pytest.mark.parametrize("params", FILTER_CASES)
async def test_genres(api: httpx.AsyncClient, ref: pd.DataFrame, params: dict[str, Any]) -> None:
    body = await get(api, "/v1/analytics/genres", **params)
    films = _ref_filter(ref, params)
    exploded = films.explode("genre_list").dropna(subset=["genre_list"])
    counts = exploded["genre_list"].value_counts()
    assert body["films"] == len(films)
    assert [i["genre"] for i in body["items"]] == sorted(
        counts.index, key=lambda g: (-counts[g], g)
    )
    for item in body["items"]:
        assert_economics(item, exploded[exploded["genre_list"] == item["genre"]], item["genre"])


async def test_genres_contract(api: httpx.AsyncClient) -> None:
    body = await get(api, "/v1/analytics/genres")
    action = next(i for i in body["items"] if i["genre"] == "Action")
    assert action["count"] == 924
    assert set(action["revenue"]) == {"n", "mean", "median", "p25", "p75", "min", "max", "sum"}
    assert body["filters"] == {
        "genre": [],
        "year_from": None,
        "year_to": None,
        "language": None,
        "company": None,
        "min_votes": None,
    }


@pytest.mark.parametrize("by", ["year", "decade", "month"])
async def test_trends(api: httpx.AsyncClient, ref: pd.DataFrame, by: str) -> None:
    params = {"by": by, "genre": ["Drama"], "min_votes": 10}
    body = await get(api, "/v1/analytics/trends", **params)
    films = filtered(ref, genres=["Drama"], min_votes=10).dropna(subset=["release_year"])
    year = films["release_year"].astype(int)
    if by == "year":
        key = year
    elif by == "decade":
        key = year // 10 * 10
    else:
        key = (
            year.astype(str).str.zfill(4)
            + "-"
            + films["release_month"].astype(int).map("{:02d}".format)
        )
    periods = sorted(key.unique())
    assert [i["period"] for i in body["items"]] == periods
    for item in body["items"]:
        assert_economics(item, films[key == item["period"]], f"{by}={item['period']}")


async def test_trends_contract(api: httpx.AsyncClient, ref: pd.DataFrame) -> None:
    body = await get(api, "/v1/analytics/trends", by="year")
    by_year = {i["period"]: i["count"] for i in body["items"]}
    assert by_year[2009] == (ref["release_year"] == 2009).sum()
    assert sum(by_year.values()) == ref["release_year"].notna().sum()


async def test_seasonality(api: httpx.AsyncClient, ref: pd.DataFrame) -> None:
    body = await get(api, "/v1/analytics/seasonality", year_from=1990)
    films = filtered(ref, year_from=1990)
    assert [i["month"] for i in body["items"]] == list(range(1, 13))
    assert body["items"][11]["month_name"] == "December"
    for item in body["items"]:
        assert_economics(item, films[films["release_month"] == item["month"]], item["month_name"])


@pytest.mark.parametrize(
    ("metric", "order", "params"),
    [
        ("revenue", "desc", {}),
        ("roi", "asc", {}),
        ("vote_average", "desc", {"min_votes": 1000}),
        ("budget", "asc", {"genre": ["Horror"]}),
        ("popularity", "desc", {"language": "fr"}),
        ("profit", "desc", {"year_from": 2015}),
        ("imdb_score", "desc", {}),
    ],
)
async def test_top(
    api: httpx.AsyncClient, ref: pd.DataFrame, metric: str, order: str, params: dict[str, Any]
) -> None:
    body = await get(api, "/v1/analytics/top", metric=metric, order=order, n=15, **params)
    films = _ref_filter(ref, params).dropna(subset=[metric])
    expected = films.sort_values(
        [metric, "id"], ascending=[order == "asc", True], kind="stable"
    ).head(15)
    assert [i["value"] for i in body["items"]] == pytest.approx(list(expected[metric]))
    assert [i["id"] for i in body["items"]] == list(expected["id"])
    assert [i["title"] for i in body["items"]] == list(expected["title"])


async def test_top_contract(api: httpx.AsyncClient) -> None:
    body = await get(api, "/v1/analytics/top", metric="revenue", n=10)
    assert len(body["items"]) == 10
    assert body["items"][0] == {
        "id": 19995,
        "title": "Avatar",
        "release_year": 2009,
        "value": 2787965087.0,
    }


@pytest.mark.parametrize(
    ("field", "bins", "scale", "params"),
    [
        ("revenue", 20, "linear", {}),
        ("budget", 12, "log", {"genre": ["Action"]}),
        ("vote_average", 10, "linear", {"min_votes": 50}),
        ("profit", 8, "log", {}),  # losses (profit <= 0) are excluded on a log scale
        ("runtime", 1, "linear", {"language": "ja"}),
    ],
)
async def test_distribution(
    api: httpx.AsyncClient,
    ref: pd.DataFrame,
    field: str,
    bins: int,
    scale: str,
    params: dict[str, Any],
) -> None:
    body = await get(
        api, "/v1/analytics/distribution", field=field, bins=bins, scale=scale, **params
    )
    films = _ref_filter(ref, params)
    values = films[field].dropna()
    assert body["unknown"] == films[field].isna().sum()
    assert_stats(body["stats"], values, field in MONEY, field)
    if scale == "log":
        positive = values[values > 0]
        assert body["excluded"] == len(values) - len(positive)
        edges = np.logspace(np.log10(positive.min()), np.log10(positive.max()), bins + 1)
        counts, _ = np.histogram(positive, bins=[positive.min(), *edges[1:-1], positive.max()])
    else:
        assert body["excluded"] == 0
        counts, edges = np.histogram(values, bins=bins)
    assert body["edges"] == pytest.approx(as_float_list(edges), rel=1e-9)
    assert body["counts"] == [int(c) for c in counts]
    assert sum(body["counts"]) == body["stats"]["n"] - body["excluded"]


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize(
    ("fields", "params"),
    [
        (None, {}),
        ("budget,revenue,vote_average,imdb_score", {"genre": ["Drama"]}),
        ("popularity,vote_count", {"year_from": 2010}),
    ],
)
async def test_correlations(
    api: httpx.AsyncClient,
    ref: pd.DataFrame,
    method: str,
    fields: str | None,
    params: dict[str, Any],
) -> None:
    query = {"method": method, **params} | ({"fields": fields} if fields else {})
    body = await get(api, "/v1/analytics/correlations", **query)
    names = (fields or "budget,revenue,popularity,vote_average,vote_count,runtime").split(",")
    complete = _ref_filter(ref, params)[names].dropna()
    expected = complete.corr(method=method)  # type: ignore[arg-type]
    assert body["fields"] == names
    assert body["n"] == len(complete)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert body["matrix"][i][j] == pytest.approx(expected.loc[a, b], abs=1e-9), (a, b)


def _ref_people(df: pd.DataFrame, column: str) -> pd.DataFrame:
    exploded = df.explode(column).dropna(subset=[column])
    grouped = exploded.groupby(column)
    return (
        pd.DataFrame(
            {
                "films": grouped.size(),
                "revenue": grouped["revenue"].sum(min_count=0),
                "vote": grouped["vote_average"].mean(),
                "first": grouped["release_year"].min(),
                "last": grouped["release_year"].max(),
            }
        )
        .rename_axis("name")
        .reset_index()
    )


@pytest.mark.parametrize(
    ("role", "sort", "params"),
    [
        ("director", "films", {}),
        ("director", "revenue", {"genre": ["Science Fiction"]}),
        ("actor", "films", {"year_from": 2000}),
        ("actor", "vote_average", {"min_films": 5}),
        ("director", "vote_average", {"min_films": 3, "min_votes": 500}),
    ],
)
async def test_people(
    api: httpx.AsyncClient, ref: pd.DataFrame, role: str, sort: str, params: dict[str, Any]
) -> None:
    body = await get(api, "/v1/analytics/people", role=role, sort=sort, n=12, **params)
    params = dict(params)
    min_films = params.pop("min_films", 1)
    films = _ref_filter(ref, params)
    column = "director_list" if role == "director" else "actor_list"
    people = _ref_people(films, column)
    people = people[people["films"] >= min_films]
    key = {"films": "films", "revenue": "revenue", "vote_average": "vote"}[sort]
    # Means equal but for the order of addition tie (the service ranks them so too).
    people = people.assign(_key=people[key].round(9))
    people = people.sort_values(
        ["_key", "films", "name"], ascending=[False, False, True], kind="stable"
    ).head(12)
    assert [p["name"] for p in body["items"]] == list(people["name"])
    exploded = films.explode(column)
    for item, (_, row) in zip(body["items"], people.iterrows(), strict=True):
        theirs = exploded[exploded[column] == item["name"]]
        assert item["films"] == row["films"]
        assert_stats(item["revenue"], theirs["revenue"], True, item["name"])
        assert_stats(item["vote_average"], theirs["vote_average"], False, item["name"])
        assert item["first_year"] == row["first"] and item["last_year"] == row["last"]


@pytest.mark.parametrize(
    ("path", "column", "label", "sort", "params"),
    [
        ("companies", "company_list", "company", "films", {}),
        ("companies", "company_list", "company", "revenue", {"genre": ["Comedy"]}),
        ("companies", "company_list", "company", "vote_average", {"min_films": 10}),
        ("languages", "original_language", "language", "films", {}),
        ("languages", "original_language", "language", "vote_average", {"min_films": 5}),
    ],
)
async def test_companies_and_languages(
    api: httpx.AsyncClient,
    ref: pd.DataFrame,
    path: str,
    column: str,
    label: str,
    sort: str,
    params: dict[str, Any],
) -> None:
    body = await get(api, f"/v1/analytics/{path}", sort=sort, n=10, **params)
    params = dict(params)
    min_films = params.pop("min_films", 1)
    exploded = _ref_filter(ref, params).explode(column).dropna(subset=[column])
    grouped = exploded.groupby(column)
    table = (
        pd.DataFrame(
            {
                "films": grouped.size(),
                "revenue": grouped["revenue"].sum(min_count=0),
                "vote_average": grouped["vote_average"].mean(),
            }
        )
        .rename_axis("name")
        .reset_index()
    )
    table = table[table["films"] >= min_films]
    table = table.sort_values(
        [sort, "films", "name"], ascending=[False, False, True], kind="stable"
    ).head(10)
    assert [i[label] for i in body["items"]] == list(table["name"])
    for item in body["items"]:
        assert_economics(item, exploded[exploded[column] == item[label]], item[label])


async def test_repeated_query_is_cached_and_versioned(api: httpx.AsyncClient) -> None:
    first = await api.get("/v1/analytics/genres", params={"genre": ["Drama", "Crime"]})
    again = await api.get("/v1/analytics/genres", params={"genre": ["Crime", "Drama"]})
    assert first.status_code == again.status_code == 200
    assert again.headers["X-Analytics-Cache"] == "hit"  # the same query, normalized
    assert again.content == first.content
    assert int(again.headers["X-Data-Version"]) == first.json()["data_version"] >= 1


async def test_empty_filter_result_is_not_an_error(api: httpx.AsyncClient) -> None:
    for path in ("summary", "genres", "trends", "seasonality", "top", "distribution"):
        body = await get(api, f"/v1/analytics/{path}", genre="No Such Genre")
        assert body["films"] == 0
    corr = await get(api, "/v1/analytics/correlations", company="Nobody")
    assert corr["n"] == 0 and corr["matrix"][0][1] is None
    season = await get(api, "/v1/analytics/seasonality", language="zz")
    assert all(i["count"] == 0 and i["revenue"]["n"] == 0 for i in season["items"])


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("genres", {"year_from": 2010, "year_to": 2000}, 400),
        ("genres", {"year_from": "soon"}, 422),
        ("genres", {"year_from": 1500}, 422),
        ("genres", {"min_votes": -1}, 422),
        ("genres", {"language": "e"}, 422),
        ("trends", {"by": "week"}, 422),
        ("top", {"metric": "title"}, 422),
        ("top", {"n": 0}, 422),
        ("top", {"n": 101}, 422),
        ("top", {"order": "up"}, 422),
        ("distribution", {"field": "title"}, 422),
        ("distribution", {"bins": 0}, 422),
        ("distribution", {"bins": 201}, 422),
        ("distribution", {"scale": "sqrt"}, 422),
        ("correlations", {"fields": "budget"}, 400),
        ("correlations", {"fields": "budget,title"}, 400),
        ("correlations", {"method": "kendall"}, 422),
        ("people", {"role": "writer"}, 422),
        ("people", {"sort": "name"}, 422),
        ("people", {"min_films": 0}, 422),
        ("companies", {"n": 501}, 422),
        ("languages", {"sort": "budget"}, 422),
    ],
)
async def test_invalid_parameters_are_problems(
    api: httpx.AsyncClient, path: str, params: dict[str, Any], status: int
) -> None:
    response = await api.get(f"/v1/analytics/{path}", params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["detail"]


async def test_too_many_genres_is_a_problem(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/analytics/genres", params={"genre": [f"g{i}" for i in range(21)]})
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_documents_every_route(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = {p: v for p, v in spec["paths"].items() if p.startswith("/v1/analytics/")}
    assert len(paths) == 11  # segments included
    for path, ops in paths.items():
        op = ops["get"]
        assert op["summary"] and op["description"], path
        ok = op["responses"]["200"]
        assert "$ref" in ok["content"]["application/json"]["schema"], path
        assert "X-Data-Version" in ok["headers"], path
        for status in ("400", "422"):
            assert "application/problem+json" in op["responses"][status]["content"], path
        names = {p["name"] for p in op["parameters"]}
        assert {"genre", "year_from", "year_to", "language", "company", "min_votes"} <= names
