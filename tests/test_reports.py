"""Reports: the data exploration report on the real films (every section, numbers equal to the
analytics API's, nothing external, its content policy, one per data version), the report
file the CLI writes, and the model reports training writes, served by version."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.db import INGEST_RUNS, Document
from app.main import create_app
from app.ml import artifacts
from app.services.movies_store import upsert_movies
from app.services.normalize import to_movie
from app.services.reports.eda import SECTION_IDS
from app.settings import Settings, get_settings
from tests import ml_support
from tests.analytics_support import API_KEY, Catalogue, app_settings, serve
from tests.support import assert_problem, in_process
from training.train import train_models

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Tables(HTMLParser):
    """Every `<table id=...>` of a document as rows of cell texts (header row first)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.sources: list[str] = []
        self.tags: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        values = dict(attrs)
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            if values.get(name):
                self.sources.append(str(values[name]))
        if tag == "table":
            self._table = self.tables.setdefault(str(values.get("id")), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rows_by_label(table: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table[1:]}


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


@pytest.fixture(scope="module")
async def api(
    catalogue: Catalogue, mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(mongodb_uri, catalogue.name, tmp_path_factory.mktemp("reports"))
    async with serve(settings) as http:
        yield http


@pytest.fixture(scope="module")
async def report(api: httpx.AsyncClient) -> httpx.Response:
    response = await api.get("/v1/reports/eda")
    assert response.status_code == 200, response.text[:500]
    return response


async def test_eda_report_is_self_contained(report: httpx.Response) -> None:
    assert report.headers["content-type"].startswith("text/html")
    assert report.headers["content-security-policy"] == CSP
    assert report.headers["x-content-type-options"] == "nosniff"
    text = report.text
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in text, section
    parsed = Tables(text)
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert "iframe" not in parsed.tags and "object" not in parsed.tags
    images = [s for s in parsed.sources if not s.startswith("#")]
    assert images and all(s.startswith("data:image/png;base64,") for s in images)
    without_images = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert not re.search(r"https?:|url\(|@import|//[a-z]", without_images)
    sections = re.findall(r'<section id="([a-z]+)">(.*?)</section>', text, flags=re.S)
    drawn = {name for name, body in sections if "<img " in body}
    assert drawn == {"coverage", "distributions", "time", "seasonality", "correlations", "outliers"}
    for name, body in sections:  # the numbers behind every figure are in a table beside it
        assert body.count("<table") >= body.count("<img "), name


async def test_eda_numbers_are_the_analytics_api_numbers(
    api: httpx.AsyncClient, report: httpx.Response
) -> None:
    tables = Tables(report.text).tables
    summary = (await api.get("/v1/analytics/summary")).json()
    overview = rows_by_label(tables["overview-table"])
    assert number(overview["Films"][0]) == summary["catalogue_films"] == 3804
    assert (
        number(overview["Films with budget and revenue known"][0])
        == (summary["with_budget_and_revenue"])
    )
    assert number(overview["Total known revenue (USD)"][0]) == round(summary["totals"]["revenue"])
    coverage = rows_by_label(tables["coverage-table"])
    for name in ("budget", "revenue", "runtime", "imdb_score", "genres", "cast"):
        assert number(coverage[name][0]) == summary["coverage"][name]["known"], name
        assert number(coverage[name][1]) == 3804 - summary["coverage"][name]["known"], name

    season = (await api.get("/v1/analytics/seasonality")).json()
    months = rows_by_label(tables["seasonality-table"])
    for item in season["items"]:
        row = months[item["month_name"]]
        assert number(row[0]) == item["count"]
        assert number(row[2]) == round(item["revenue"]["median"])

    for field, scale in (("budget", "log"), ("runtime", "linear"), ("vote_count", "log")):
        answer = await api.get(
            "/v1/analytics/distribution", params={"field": field, "bins": 30, "scale": scale}
        )
        bins = tables[f"bins-{field}"][1:]
        assert [number(r[2]) for r in bins] == answer.json()["counts"], field

    fields = "budget,revenue,popularity,vote_average,vote_count,runtime,release_year,imdb_score"
    pearson = (await api.get("/v1/analytics/correlations", params={"fields": fields})).json()
    matrix = rows_by_label(tables["correlations-pearson-table"])
    for name, row in zip(pearson["fields"], pearson["matrix"], strict=True):
        assert [number(x) for x in matrix[name]] == pytest.approx(row, abs=5e-4), name

    top = (await api.get("/v1/analytics/top", params={"metric": "roi", "n": 15})).json()
    assert [int(r[0]) for r in tables["top-roi-table"][1:]] == [i["id"] for i in top["items"]]

    genres = (await api.get("/v1/analytics/genres")).json()
    by_decade = rows_by_label(tables["genres-by-decade-table"])
    # A genre's films over the decades: every film of that genre with a release year.
    drama = next(i for i in genres["items"] if i["genre"] == "Drama")
    assert sum(number(x) for x in by_decade["Drama"]) == drama["count"]
    assert next(iter(by_decade)) == genres["items"][0]["genre"]  # most films first, as the API


async def test_eda_report_is_cached_per_data_version(
    api: httpx.AsyncClient, report: httpx.Response
) -> None:
    tag = report.headers["etag"]
    assert tag.startswith('W/"')
    again = await api.get("/v1/reports/eda")
    assert again.content == report.content  # the same build, from memory
    assert again.headers["x-data-version"] == report.headers["x-data-version"]
    assert again.headers["cache-control"].startswith("private, max-age=")
    held = await api.get("/v1/reports/eda", headers={"If-None-Match": tag})
    assert held.status_code == 304 and held.content == b""
    anonymous = await api.get("/v1/reports/eda", headers={"X-API-Key": ""})
    assert_problem(anonymous, 401)


async def test_eda_report_follows_the_data_and_the_ingest_runs(
    db: AsyncDatabase[Document],
    settings: Settings,
    tmp_path: Path,
    mongodb_uri: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a tiny catalogue: the report is rebuilt for a new version, shows the last TMDB
    ingest run with its rejected rows, and `tmdb-analytics report eda` writes the same
    sections to a file."""

    def film(movie_id: int, **fields: Any) -> Any:
        record = {
            "id": movie_id,
            "title": f"Film {movie_id}",
            "release_date": f"{1990 + movie_id}-0{1 + movie_id % 9}-01",
            "genres": ["Drama"],
            "original_language": "en",
            "vote_count": 10 * movie_id,
            "vote_average": 6.0,
            "popularity": 1.0 + movie_id,
            **fields,
        }
        return to_movie(record, "tmdb-api")

    await upsert_movies(db, [film(1, budget=5, revenue=12_000_000), film(2, runtime=90)])
    await db[INGEST_RUNS].insert_one(
        {
            "_id": "discover-20260101T000000Z-abc123",
            "kind": "discover",
            "status": "done",
            "started_at": datetime(2026, 1, 1, tzinfo=UTC),
            "counts": {"inserted": 2, "updated": 0, "rejected": 1},
            "errors_total": 1,
            "errors": [{"id": 77, "kind": "rejected", "reason": "title: missing <b>"}],
        }
    )
    app = create_app(
        settings.model_copy(update={"admin_api_key": API_KEY, "snapshot_check_seconds": 0.0})
    )
    async with in_process(app, headers={"X-API-Key": API_KEY}) as http:
        await app.state.app_state.analytics.settled()
        first = await http.get("/v1/reports/eda")
        assert first.status_code == 200
        tables = Tables(first.text).tables
        runs = tables["ingest-runs-table"]
        assert runs[1][0] == "discover-20260101T000000Z-abc123"
        assert runs[1][6] == "1"  # rejected
        assert tables["ingest-errors-table"][1] == ["77", "rejected", "title: missing <b>"]
        assert "<b>" not in first.text  # escaped
        flags = rows_by_label(tables["flags-table"])
        assert flags["budget_scaled_from_millions"] == ["1"]

        await upsert_movies(db, [film(3)])
        engine = app.state.app_state.analytics
        await engine.snapshot()
        await engine.settled()
        second = await http.get("/v1/reports/eda", headers={"If-None-Match": first.headers["etag"]})
        assert second.status_code == 200
        assert int(second.headers["x-data-version"]) > int(first.headers["x-data-version"])
        assert rows_by_label(Tables(second.text).tables["overview-table"])["Films"] == ["3"]

    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("LOCAL_DB_DIR", str(settings.local_db_dir))
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    out = tmp_path / "eda.html"
    try:
        result = await asyncio.to_thread(
            CliRunner().invoke, cli_app, ["report", "eda", "--out", str(out)]
        )
        missing_folder = await asyncio.to_thread(
            CliRunner().invoke, cli_app, ["report", "eda", "--out", str(tmp_path / "no" / "x")]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == str(out)
    assert missing_folder.exit_code == 2 and "does not exist" in missing_folder.output
    written = out.read_text(encoding="utf-8")
    assert "Films" in written
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in written, section


async def test_eda_report_of_an_empty_catalogue(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"admin_api_key": API_KEY}))
    async with in_process(app, headers={"X-API-Key": API_KEY}) as http:
        answer = await http.get("/v1/reports/eda")
        assert answer.status_code == 200
        assert "The catalogue is empty" in answer.text


# --- model reports ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The quick-trained artifacts (no reports), plus one more quick run with its reports,
    not activated: (root, version with a report, version without)."""
    root = ml_support.copy_artifacts(tmp_path_factory)
    without = ml_support.versions(root, "revenue")[0]
    trained = train_models(
        ml_support.small_dataset(),
        root,
        ml_support.quick_options(seed=3, report=True, activate=False, models=("revenue",)),
        say=lambda _m: None,
    )
    return root, trained[0].version, without


async def test_model_reports(
    model_artifacts: tuple[Path, str, str], mongodb_uri: str, tmp_path: Path
) -> None:
    root, with_report, without = model_artifacts
    settings = ml_support.app_settings(mongodb_uri, root, tmp_path)
    async with ml_support.serve(settings) as http:
        base = "/v1/models/revenue/versions"
        answer = await http.get(f"{base}/{with_report}/report")
        assert answer.status_code == 200, answer.text[:300]
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.headers["content-security-policy"] == CSP
        assert (
            answer.content == (root / "revenue" / with_report / artifacts.REPORT_FILE).read_bytes()
        )
        assert f"version <code>{with_report}</code>" in answer.text
        parsed = Tables(answer.text)
        assert "script" not in parsed.tags
        assert all(s.startswith("data:image/png;base64,") for s in parsed.sources)

        body = assert_problem(await http.get(f"{base}/{without}/report"), 404)
        assert "no report" in body["detail"]
        for path in (
            f"{base}/20990101T000000Z/report",  # no such version
            "/v1/models/nope/versions/20990101T000000Z/report",  # no such model
            f"{base}/latest/report",  # not a version string
            f"{base}/..%2F..%2FACTIVE/report",  # traversal, encoded
            f"{base}/%2E%2E/report",
        ):
            assert_problem(await http.get(path), 404)
        # Serving the report needs a credential like every other model endpoint.
        anonymous = await http.get(f"{base}/{with_report}/report", headers={"X-API-Key": ""})
        assert_problem(anonymous, 401)
