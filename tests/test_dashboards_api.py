"""`/v1/dashboards` in-process against a real FerretDB: the contract, ownership (404 for
everyone else, admins included), If-Match, validation naming the widget and field, limits,
share links, the starter dashboard, the export, and the widget catalogue's derivation from
the routes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from html import unescape
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Query
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.security import Role, protected
from app.services import dashboards as dashboard_service
from app.settings import Settings
from tests.dashboard_support import (
    Callers,
    dashboard_body,
    load_films,
    make_callers,
    wait_for_films,
)
from tests.security_support import make_app, security_settings, serve

PROBLEM = "application/problem+json"
OTHERS = [
    "bob",
    "pat",
    "ada",
    "key-viewer",
    "key-predictor",
    "key-admin",
    "admin-key",
]


@pytest.fixture
def sec_settings(settings: Settings) -> Settings:
    return security_settings(settings, rate_limit_per_minute=100_000)


@pytest.fixture
async def api(sec_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(sec_settings, probes=False)) as client:
        yield client


@pytest.fixture
async def who(db: AsyncDatabase[Document], api: httpx.AsyncClient) -> Callers:
    return await make_callers(db, api)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def create(api: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/dashboards", json=dashboard_body(**body), headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# --- the contract --------------------------------------------------------------------------


async def test_create_read_list_replace_delete(api: httpx.AsyncClient, who: Callers) -> None:
    body = {
        "name": "My genres",
        "widgets": [
            {
                "title": "Films per genre",
                "endpoint": "/v1/analytics/genres",
                "params": {"year_from": 2000},
                "chart": "bar",
            }
        ],
    }
    response = await api.post("/v1/dashboards", json=body, headers=who["alice"])
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] and created["version"] == 1
    assert created["name"] == "My genres" and created["filters"] == {}
    widget = created["widgets"][0]
    assert widget["params"] == {"year_from": 2000}
    assert widget["measures"] == ["count"]  # the chart's default, made explicit
    assert widget["width"] == 1
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"/v1/dashboards/{created['id']}"

    read = await api.get(f"/v1/dashboards/{created['id']}", headers=who["alice"])
    assert read.status_code == 200 and read.json() == created
    assert read.headers["etag"] == '"1"'

    listed = (await api.get("/v1/dashboards", headers=who["alice"])).json()
    assert [d["id"] for d in listed["items"]] == [created["id"]]
    assert listed["items"][0]["widgets"] == 1 and listed["items"][0]["shared"] is False

    replaced = await api.put(
        f"/v1/dashboards/{created['id']}",
        json={**body, "name": "Renamed", "filters": {"language": "EN"}},
        headers={**who["alice"], "If-Match": '"1"'},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["version"] == 2 and replaced.json()["name"] == "Renamed"
    assert replaced.json()["filters"] == {"language": "EN"}
    assert replaced.headers["etag"] == '"2"'

    deleted = await api.delete(f"/v1/dashboards/{created['id']}", headers=who["alice"])
    assert deleted.status_code == 204
    problem(await api.get(f"/v1/dashboards/{created['id']}", headers=who["alice"]), 404)
    assert (await api.get("/v1/dashboards", headers=who["alice"])).json()["items"] == []


async def test_needs_credentials(api: httpx.AsyncClient) -> None:
    problem(await api.get("/v1/dashboards"), 401)
    problem(await api.post("/v1/dashboards", json=dashboard_body()), 401)
    problem(await api.get("/v1/dashboards/shared/" + "x" * 43), 401)


# --- ownership -----------------------------------------------------------------------------


async def test_nobody_else_can_see_or_touch_a_dashboard(
    api: httpx.AsyncClient, who: Callers
) -> None:
    mine = await create(api, who["alice"])
    path = f"/v1/dashboards/{mine['id']}"
    replacement = dashboard_body(name="hijacked")
    for other in OTHERS:
        headers = who[other]
        assert (await api.get("/v1/dashboards", headers=headers)).json()["items"] == [], other
        problem(await api.get(path, headers=headers), 404)
        problem(await api.put(path, json=replacement, headers={**headers, "If-Match": '"1"'}), 404)
        problem(await api.put(path, json=replacement, headers={**headers, "If-Match": '"9"'}), 404)
        problem(await api.delete(path, headers=headers), 404)
        problem(await api.post(f"{path}/share", headers=headers), 404)
        problem(await api.delete(f"{path}/share", headers=headers), 404)
        problem(await api.get(f"{path}/export", headers=headers), 404)
    # The same 404 as for an id that does not exist: nothing to learn from it.
    unknown = problem(
        await api.get("/v1/dashboards/000000000000000000000000", headers=who["bob"]), 404
    )
    seen = problem(await api.get(path, headers=who["bob"]), 404)
    assert unknown["title"] == seen["title"]
    # Untouched, and never shared.
    after = (await api.get(path, headers=who["alice"])).json()
    assert after == mine


async def test_an_api_key_owns_its_own_dashboards(api: httpx.AsyncClient, who: Callers) -> None:
    # The key is named "alice" but owns by key id: it does not see alice's dashboards.
    by_key = await create(api, who["key-viewer"], name="Partner view")
    by_user = await create(api, who["alice"], name="Alice's")
    keyed = (await api.get("/v1/dashboards", headers=who["key-viewer"])).json()["items"]
    assert [d["id"] for d in keyed] == [by_key["id"]]
    problem(await api.get(f"/v1/dashboards/{by_user['id']}", headers=who["key-viewer"]), 404)
    problem(await api.get(f"/v1/dashboards/{by_key['id']}", headers=who["alice"]), 404)
    problem(await api.get(f"/v1/dashboards/{by_key['id']}", headers=who["key-admin"]), 404)


# --- optimistic concurrency ----------------------------------------------------------------


async def test_put_needs_the_current_version(api: httpx.AsyncClient, who: Callers) -> None:
    mine = await create(api, who["alice"])
    path = f"/v1/dashboards/{mine['id']}"
    body = dashboard_body(name="v2")

    missing = problem(await api.put(path, json=body, headers=who["alice"]), 428)
    assert "If-Match" in missing["detail"]
    problem(await api.put(path, json=body, headers={**who["alice"], "If-Match": "*"}), 428)

    wrong = await api.put(path, json=body, headers={**who["alice"], "If-Match": '"7"'})
    assert "version 1" in problem(wrong, 412)["detail"]
    assert wrong.headers["etag"] == '"1"'

    ok = await api.put(path, json=body, headers={**who["alice"], "If-Match": 'W/"1"'})
    assert ok.status_code == 200 and ok.json()["version"] == 2

    # A second writer holding version 1 loses, and the first write is kept.
    stale = await api.put(
        path, json=dashboard_body(name="lost"), headers={**who["alice"], "If-Match": '"1"'}
    )
    problem(stale, 412)
    assert (await api.get(path, headers=who["alice"])).json()["name"] == "v2"

    # Delete checks If-Match when it is sent.
    problem(await api.delete(path, headers={**who["alice"], "If-Match": '"1"'}), 412)
    assert (await api.delete(path, headers={**who["alice"], "If-Match": '"2"'})).status_code == 204


# --- validation ----------------------------------------------------------------------------


def widget(endpoint: str, chart: str = "table", **extra: Any) -> dict[str, Any]:
    return {"title": "w", "endpoint": endpoint, "chart": chart, **extra}


async def invalid(
    api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    answer = problem(await api.post("/v1/dashboards", json=body, headers=headers), 422)
    assert answer["errors"], answer
    return answer


async def test_bad_widgets_are_named_by_index_and_field(
    api: httpx.AsyncClient, who: Callers
) -> None:
    good = widget("/v1/analytics/genres", "bar")
    body = dashboard_body(
        widgets=[
            good,
            good,
            widget("/v1/analytics/trends", "line", params={"year_from": 1700, "by": "week"}),
        ]
    )
    answer = await invalid(api, who["alice"], body)
    fields = {e["field"] for e in answer["errors"]}
    assert fields == {"widgets[2].params.year_from", "widgets[2].params.by"}
    assert "widgets[2].params.year_from" in answer["detail"]
    loc = next(e["loc"] for e in answer["errors"] if e["field"].endswith("year_from"))
    assert loc == ["body", "widgets", "2", "params", "year_from"]

    a = "/v1/analytics"
    cases: list[tuple[dict[str, Any], str]] = [
        (widget(f"{a}/genres", params={"nope": 1}), "params.nope"),
        (widget(f"{a}/genres", params={"a.b": 1}), "params.a.b"),
        (widget(f"{a}/genres", params={"$where": "1"}), "params.$where"),
        (widget(f"{a}/nope"), "endpoint"),
        (widget("/v1/movies/{movie_id}"), "endpoint"),
        (widget("/v1/predict/revenue"), "endpoint"),
        (widget(f"{a}/genres", "heatmap"), "chart"),
        (widget(f"{a}/genres", "histogram"), "chart"),
        (widget(f"{a}/correlations", "bar"), "chart"),
        (widget(f"{a}/summary", "line"), "chart"),
        (widget(f"{a}/distribution", "heatmap"), "chart"),
        (widget(f"{a}/genres", "bar", measures=["count.sum"]), "measures"),
        (widget(f"{a}/genres", "scatter", measures=["count"]), "measures"),
        (widget(f"{a}/distribution", "histogram", measures=["count"]), "measures"),
        (widget(f"{a}/top", params={"n": 0}), "params.n"),
        (widget(f"{a}/top", params={"metric": "likes"}), "params.metric"),
        (widget(f"{a}/top", params={"genre": "Action"}), "params.genre"),
        (widget(f"{a}/correlations", params={"fields": "budget,nope"}), "params.fields"),
        (widget("/v1/movies", params={"sort": "-title"}), "params.sort"),
        (widget("/v1/movies", params={"cursor": "abc"}), "params.cursor"),
        (widget(f"{a}/genres", params={"year_from": 2010, "year_to": 2000}), "params.year_from"),
    ]
    for spec, field in cases:
        answer = await invalid(api, who["alice"], dashboard_body(widgets=[spec]))
        assert f"widgets[0].{field}" in {e["field"] for e in answer["errors"]}, (spec, answer)

    # Structure errors are 422 problems too (from the request model).
    no_title = await invalid(
        api,
        who["alice"],
        dashboard_body(widgets=[{"endpoint": "/v1/analytics/genres", "chart": "bar"}]),
    )
    assert ["body", "widgets", "0", "title"] in [e["loc"] for e in no_title["errors"]]
    bad_chart = await invalid(
        api, who["alice"], dashboard_body(widgets=[widget("/v1/analytics/genres", "pie")])
    )
    assert ["body", "widgets", "0", "chart"] in [e["loc"] for e in bad_chart["errors"]]
    # Nothing was stored.
    assert (await api.get("/v1/dashboards", headers=who["alice"])).json()["items"] == []


async def test_global_filters_are_checked_and_merged(api: httpx.AsyncClient, who: Callers) -> None:
    answer = await invalid(api, who["alice"], dashboard_body(filters={"language": "x", "q": "y"}))
    assert {e["field"] for e in answer["errors"]} == {"filters.language", "filters.q"}
    answer = await invalid(
        api, who["alice"], dashboard_body(filters={"year_from": 2010, "year_to": 2000})
    )
    assert {e["field"] for e in answer["errors"]} == {"filters.year_from"}
    # A widget's own year_to before the dashboard's year_from: the widget's field is named.
    body = dashboard_body(
        filters={"year_from": 2010},
        widgets=[widget("/v1/analytics/genres", params={"year_to": 2000})],
    )
    answer = await invalid(api, who["alice"], body)
    assert {e["field"] for e in answer["errors"]} == {"widgets[0].params.year_to"}

    ok = await create(
        api,
        who["alice"],
        filters={"genre": ["Drama", "Action"], "year_from": 1990, "min_votes": 10},
        widgets=[
            widget("/v1/analytics/correlations", "heatmap", params={"fields": "budget,revenue"}),
            widget(
                "/v1/analytics/distribution",
                "histogram",
                params={"field": "budget", "scale": "log"},
            ),
            widget("/v1/movies", "scatter", params={"sort": "-revenue", "limit": 50}),
            widget("/v1/analytics/summary", "table"),
        ],
    )
    assert ok["filters"] == {"genre": ["Drama", "Action"], "year_from": 1990, "min_votes": 10}
    assert ok["widgets"][2]["measures"] == ["budget", "revenue"]


async def test_limits(
    api: httpx.AsyncClient, who: Callers, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = [widget("/v1/analytics/genres")] * 25
    answer = await invalid(api, who["alice"], dashboard_body(widgets=many))
    assert ["body", "widgets"] in [e["loc"] for e in answer["errors"]]
    await invalid(api, who["alice"], dashboard_body(name="x" * 101))
    await invalid(api, who["alice"], dashboard_body(name="   "))
    await invalid(
        api,
        who["alice"],
        dashboard_body(widgets=[{**widget("/v1/analytics/genres"), "title": "t" * 121}]),
    )

    monkeypatch.setattr(dashboard_service, "MAX_DASHBOARDS_PER_OWNER", 3)
    for i in range(3):
        await create(api, who["alice"], name=f"d{i}")
    full = problem(
        await api.post("/v1/dashboards", json=dashboard_body(), headers=who["alice"]), 409
    )
    assert "at most 3" in full["detail"]
    await create(api, who["bob"])  # the limit is per owner
    assert len((await api.get("/v1/dashboards", headers=who["alice"])).json()["items"]) == 3


# --- share links ---------------------------------------------------------------------------


async def test_share_links(api: httpx.AsyncClient, who: Callers) -> None:
    mine = await create(api, who["alice"], filters={"year_from": 2000})
    path = f"/v1/dashboards/{mine['id']}"
    made = await api.post(f"{path}/share", headers=who["alice"])
    assert made.status_code == 201, made.text
    link = made.json()
    token = link["token"]
    assert len(token) >= 40 and link["url"] == f"/ui/shared/{token}"
    assert link["api_url"] == f"/v1/dashboards/shared/{token}"
    again = await api.post(f"{path}/share", headers=who["alice"])
    assert again.status_code == 200 and again.json()["token"] == token
    assert (await api.get(path, headers=who["alice"])).json()["share"]["token"] == token

    for reader in ["bob", "pat", "key-viewer", "admin-key", "alice"]:
        shared = await api.get(link["api_url"], headers=who[reader])
        assert shared.status_code == 200, (reader, shared.text)
        view = shared.json()
        assert set(view) == {"name", "widgets", "filters", "version", "updated_at"}
        assert view["widgets"] == mine["widgets"] and view["filters"] == {"year_from": 2000}
    # Read-only: the link gives no way to change it, and the dashboard stays private.
    problem(await api.get(path, headers=who["bob"]), 404)
    problem(await api.put(link["api_url"], json=dashboard_body(), headers=who["bob"]), 405)
    other = token[:-1] + ("B" if token.endswith("A") else "A")  # one character off
    problem(await api.get("/v1/dashboards/shared/" + other, headers=who["bob"]), 404)

    assert (await api.delete(f"{path}/share", headers=who["alice"])).status_code == 204
    problem(await api.get(link["api_url"], headers=who["bob"]), 404)
    assert (await api.get(path, headers=who["alice"])).json()["share"] is None
    assert (await api.delete(f"{path}/share", headers=who["alice"])).status_code == 204

    fresh = (await api.post(f"{path}/share", headers=who["alice"])).json()
    assert fresh["token"] != token
    problem(await api.get(link["api_url"], headers=who["bob"]), 404)
    assert (await api.get(fresh["api_url"], headers=who["bob"])).status_code == 200
    # Deleting the dashboard kills its link.
    assert (await api.delete(path, headers=who["alice"])).status_code == 204
    problem(await api.get(fresh["api_url"], headers=who["bob"]), 404)


# --- starter dashboard ---------------------------------------------------------------------


async def test_starter_dashboard_is_made_once(api: httpx.AsyncClient, who: Callers) -> None:
    first = await api.post("/v1/dashboards/default", headers=who["bob"])
    assert first.status_code == 201, first.text
    items = first.json()["items"]
    assert len(items) == 1 and items[0]["widgets"] >= 6
    again = await api.post("/v1/dashboards/default", headers=who["bob"])
    assert again.status_code == 200 and again.json()["items"] == items
    starter = (await api.get(f"/v1/dashboards/{items[0]['id']}", headers=who["bob"])).json()
    charts = {w["chart"] for w in starter["widgets"]}
    assert {"bar", "line", "scatter", "table"} <= charts
    endpoints = {w["endpoint"] for w in starter["widgets"]}
    assert {
        "/v1/analytics/genres",
        "/v1/analytics/trends",
        "/v1/analytics/seasonality",
    } <= endpoints
    # Someone with dashboards of their own gets none.
    await create(api, who["alice"])
    assert (await api.post("/v1/dashboards/default", headers=who["alice"])).status_code == 200
    assert len((await api.get("/v1/dashboards", headers=who["alice"])).json()["items"]) == 1
    problem(await api.get(f"/v1/dashboards/{items[0]['id']}", headers=who["alice"]), 404)


# --- export --------------------------------------------------------------------------------


def embedded(html: str) -> dict[str, Any]:
    match = re.search(
        r'<script type="application/json" id="dashboard-data">(.*?)</script>', html, re.S
    )
    assert match, "no embedded data"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


async def test_export_is_one_offline_file_with_the_same_numbers(
    db: AsyncDatabase[Document], api: httpx.AsyncClient, who: Callers, tmp_path: Path
) -> None:
    await load_films(db, tmp_path)
    await wait_for_films(api, who["alice"], 60)
    starter = (await api.post("/v1/dashboards/default", headers=who["alice"])).json()["items"][0]
    dashboard_id = starter["id"]
    # Global filters too: the export must apply them exactly as the page does.
    current = (await api.get(f"/v1/dashboards/{dashboard_id}", headers=who["alice"])).json()
    body = {
        "name": current["name"],
        "widgets": current["widgets"]
        + [
            widget("/v1/analytics/correlations", "heatmap"),
            widget("/v1/analytics/distribution", "histogram", params={"field": "budget"}),
        ],
        "filters": {"year_from": 1995, "genre": ["Drama", "Comedy"]},
    }
    saved = await api.put(
        f"/v1/dashboards/{dashboard_id}", json=body, headers={**who["alice"], "If-Match": '"1"'}
    )
    assert saved.status_code == 200, saved.text

    exported = await api.get(f"/v1/dashboards/{dashboard_id}/export", headers=who["alice"])
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("text/html")
    assert exported.headers["content-disposition"].startswith("attachment; filename=")
    html = exported.text
    # plotly.js itself is inside, byte for byte, and nothing is loaded from anywhere.
    plotly_js = (files("plotly") / "package_data" / "plotly.min.js").read_text()
    assert plotly_js in html
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert policy and unescape(policy.group(1)).startswith(
        "default-src 'none'; script-src 'sha256-"
    )

    data = embedded(html)
    assert data["name"] == current["name"] and len(data["widgets"]) == len(body["widgets"])
    for entry in data["widgets"]:
        endpoint = entry["widget"]["endpoint"]
        live = await api.get(endpoint, params=entry["query"], headers=who["alice"])
        assert live.status_code == 200, live.text
        assert "data" in entry, entry.get("error")
        expected = live.json()
        assert entry["data"] == expected, endpoint
        query = dict(entry["query"])
        if endpoint.startswith("/v1/analytics/") or endpoint == "/v1/movies":
            assert ["year_from", "1995"] in entry["query"], endpoint
        assert query.get("genre") in {"Drama", "Comedy"}
    genres = next(e for e in data["widgets"] if e["widget"]["endpoint"] == "/v1/analytics/genres")
    assert {i["genre"] for i in genres["data"]["items"]} >= {"Drama", "Comedy"}
    assert sum(i["count"] for i in genres["data"]["items"]) > 0


# --- the catalogue follows the routes -------------------------------------------------------


async def test_catalogue_is_derived_from_the_routes(
    sec_settings: Settings, db: AsyncDatabase[Document]
) -> None:
    app = make_app(sec_settings, probes=False)
    extra = APIRouter(prefix="/v1/analytics")

    @extra.get("/novelty", summary="A new aggregate", response_model=dict[str, int])
    async def novelty(
        depth: Annotated[int, Query(ge=5, le=9, description="How deep")] = 5,
        # A query name that is no Python identifier and a BaseModel attribute name.
        min_depth: Annotated[int | None, Query(alias="min-depth", ge=0)] = None,
        json_: Annotated[str | None, Query(alias="json", max_length=3)] = None,
    ) -> dict[str, int]:
        """A route added after the dashboards were written."""
        return {"depth": depth}

    app.include_router(extra, **protected(Role.viewer))
    async with serve(app) as client:
        callers = await make_callers(db, client)
        catalog = (await client.get("/v1/dashboards/catalog", headers=callers["bob"])).json()
        by_endpoint = {e["endpoint"]: e for e in catalog["endpoints"]}
        openapi = (await client.get("/openapi.json")).json()
        analytics = {p for p in openapi["paths"] if p.startswith("/v1/analytics/")}
        assert analytics <= set(by_endpoint)
        assert "/v1/movies" in by_endpoint
        for path in analytics:
            declared = {
                p["name"] for p in openapi["paths"][path]["get"].get("parameters", [])
                if p["in"] == "query"
            }  # fmt: skip
            # Every query parameter but `format`: widgets draw JSON, never CSV.
            assert {p["name"] for p in by_endpoint[path]["params"]} == declared - {"format"}, path
        depth = next(
            p for p in by_endpoint["/v1/analytics/novelty"]["params"] if p["name"] == "depth"
        )
        assert depth["schema"] == {"type": "integer", "minimum": 5, "maximum": 9}
        assert depth["default"] == 5 and depth["description"] == "How deep"
        assert [f["name"] for f in catalog["filters"]] == [
            "genre", "year_from", "year_to", "language", "company", "min_votes"
        ]  # fmt: skip
        bad = dashboard_body(widgets=[widget("/v1/analytics/novelty", params={"depth": 3})])
        answer = await client.post("/v1/dashboards", json=bad, headers=callers["bob"])
        assert answer.status_code == 422
        assert answer.json()["errors"][0]["field"] == "widgets[0].params.depth"
        odd = dashboard_body(
            widgets=[widget("/v1/analytics/novelty", params={"min-depth": -1, "json": "long"})]
        )
        answer = await client.post("/v1/dashboards", json=odd, headers=callers["bob"])
        assert {e["field"] for e in answer.json()["errors"]} == {
            "widgets[0].params.min-depth",
            "widgets[0].params.json",
        }
        params = {"depth": 7, "min-depth": 2, "json": "abc"}
        good = dashboard_body(widgets=[widget("/v1/analytics/novelty", params=params)])
        saved = await client.post("/v1/dashboards", json=good, headers=callers["bob"])
        assert saved.status_code == 201, saved.text
        assert saved.json()["widgets"][0]["params"] == params


# --- the page and its files ----------------------------------------------------------------


async def test_page_is_public_html_under_a_strict_policy(api: httpx.AsyncClient) -> None:
    page = await api.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    html = page.text
    # No inline script: every <script> loads a file of the service.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(
        'src="/ui/assets/' in attrs and not body.strip() for attrs, body in scripts
    )
    assert "http://" not in html and "https://" not in html
    shared = await api.get("/ui/shared/abcDEF123_-")
    assert shared.status_code == 200 and 'data-share-token="abcDEF123_-"' in shared.text


async def test_the_service_address_leads_to_the_dashboard_page(api: httpx.AsyncClient) -> None:
    root = await api.get("/", headers={"Host": "elsewhere.example"})
    assert root.status_code == 307 and root.headers["location"] == "/ui"
    assert (await api.get("/", follow_redirects=True)).text == (await api.get("/ui")).text
    problem(await api.get("/nothing-here"), 404)  # other unknown paths stay problems


async def test_assets_are_fingerprinted_and_cached(api: httpx.AsyncClient) -> None:
    html = (await api.get("/ui")).text
    urls = re.findall(r'(?:src|href)="(/ui/assets/[^"]+)"', html)
    assert len(urls) == 4
    plotly_url = next(u for u in urls if "plotly" in u)
    source = (files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    plain = await api.get(plotly_url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and plain.content == source
    assert plain.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert plain.headers["content-type"].startswith("text/javascript")
    zipped = await api.get(plotly_url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == source
    app_js = next(u for u in urls if "/app." in u)
    own = (files("app") / "static" / "ui" / "app.js").read_bytes()
    assert hashlib.sha256(own).hexdigest()[:12] in app_js
    assert (await api.get(app_js)).content == own
    problem(await api.get("/ui/assets/app.000000000000.js"), 404)


async def test_a_lone_surrogate_in_a_widget_parameter_is_a_422_not_a_500(
    api: httpx.AsyncClient, who: Callers
) -> None:
    """`params` takes any JSON value, so pydantic let an unpaired `\\ud800` through and the
    write to the database failed (500). The body is refused as JSON that is not Unicode text;
    a surrogate pair (one character) is an ordinary string."""
    headers = {**who["alice"], "content-type": "application/json"}
    for raw in (
        '{"name": "n", "widgets": [{"title": "t", "endpoint": "/v1/analytics/genres", '
        '"params": {"genre": ["a\\ud800"]}, "chart": "bar"}]}',
        '{"name": "n", "widgets": [{"title": "t", "endpoint": "/v1/analytics/genres", '
        '"params": {"genre": ["\\udc00"]}, "chart": "bar"}]}',
    ):
        body = problem(await api.post("/v1/dashboards", content=raw, headers=headers), 422)
        assert "surrogate" in str(body)
    paired = dashboard_body(name="Genres \U0001f3ac")
    paired["widgets"][0]["params"] = {"genre": ["Drama \U0001f3ac"]}
    raw = json.dumps(paired)  # ASCII escapes: the emoji as \ud83c\udfac
    assert "\\ud83c\\udfac" in raw
    created = await api.post("/v1/dashboards", content=raw, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["widgets"][0]["params"] == {"genre": ["Drama \U0001f3ac"]}
