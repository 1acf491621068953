"""Load profile for the TMDB Analytics Service: what frontends and partner systems do.

Each simulated client authenticates once (most with an API key, some by logging in for a
bearer token, as a frontend would), then browses: analytics aggregates with varying filters,
film searches and film details, with a short think time between calls. Every non-2xx answer
counts as an error. Run through `bench/run_load.sh`, which sets the environment below.

Environment: LOAD_API_KEYS (comma-separated keys), LOAD_USERNAME / LOAD_PASSWORD (a viewer
account for the bearer-token clients).
"""

from __future__ import annotations

import os
import random
from typing import Any
from urllib.parse import urlencode

from locust import between, tag, task
from locust.contrib.fasthttp import FastHttpUser

API_KEYS = [k for k in os.environ.get("LOAD_API_KEYS", "").split(",") if k]
USERNAME = os.environ.get("LOAD_USERNAME", "")
PASSWORD = os.environ.get("LOAD_PASSWORD", "")
BEARER_SHARE = 0.2  # one client in five logs in with a password

GENRES = ["Action", "Drama", "Comedy", "Thriller", "Adventure", "Science Fiction", "Family"]
LANGUAGES = ["en", "fr", "es", "de", "ja"]
DECADES = [(1980, 1989), (1990, 1999), (2000, 2009), (2010, 2019)]
TOP_METRICS = ["revenue", "budget", "profit", "roi", "vote_average", "popularity"]
FIELDS = ["budget", "revenue", "runtime", "vote_average", "popularity"]
SEARCH_SORTS = ["-popularity", "-revenue", "-vote_average", "release_year", "-roi", "id"]
TITLE_WORDS = ["star", "love", "man", "dark", "night", "the", "war", "king"]


def _filters() -> dict[str, Any]:
    """A random, realistic filter: nothing, a genre, a decade, a language, or a mix."""
    params: dict[str, Any] = {}
    if random.random() < 0.5:
        params["genre"] = random.choice(GENRES)
    if random.random() < 0.4:
        params["year_from"], params["year_to"] = random.choice(DECADES)
    if random.random() < 0.2:
        params["language"] = random.choice(LANGUAGES)
    return params


class ApiClient(FastHttpUser):
    wait_time = between(0.2, 1.0)
    headers: dict[str, str]
    movie_ids: list[int]

    def on_start(self) -> None:
        if USERNAME and (random.random() < BEARER_SHARE or not API_KEYS):
            response = self.client.post(
                "/v1/auth/token",
                data=urlencode({"username": USERNAME, "password": PASSWORD}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                name="/v1/auth/token",
            )
            self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        else:
            self.headers = {"X-API-Key": random.choice(API_KEYS)}
        # Film ids for the detail pages, from the (in-memory) analytics top list.
        top = self.client.get(
            "/v1/analytics/top?metric=popularity&n=100",
            headers=self.headers,
            name="/v1/analytics/top",
        )
        self.movie_ids = [int(m["id"]) for m in top.json().get("items", [])] or [0]

    def _get(self, path: str, params: dict[str, Any] | None = None) -> None:
        query = f"?{urlencode(params, doseq=True)}" if params else ""
        # `name` groups the statistics by endpoint, not by query string.
        self.client.get(path + query, headers=self.headers, name=path)

    @task(4)
    def summary(self) -> None:
        self._get("/v1/analytics/summary", _filters())

    @task(4)
    def genres(self) -> None:
        self._get("/v1/analytics/genres", _filters())

    @task(3)
    def trends(self) -> None:
        self._get("/v1/analytics/trends", {"by": random.choice(["year", "decade"]), **_filters()})

    @task(2)
    def seasonality(self) -> None:
        self._get("/v1/analytics/seasonality", _filters())

    @task(3)
    def top(self) -> None:
        params = {"metric": random.choice(TOP_METRICS), "n": 10, **_filters()}
        self._get("/v1/analytics/top", params)

    @task(2)
    def distribution(self) -> None:
        self._get("/v1/analytics/distribution", {"field": random.choice(FIELDS), "bins": 20})

    @task(1)
    def correlations(self) -> None:
        self._get("/v1/analytics/correlations", _filters())

    @task(1)
    def people(self) -> None:
        self._get("/v1/analytics/people", {"role": random.choice(["director", "actor"]), "n": 20})

    @task(1)
    def companies(self) -> None:
        self._get("/v1/analytics/companies", {"n": 20})

    # Film search and detail are tagged so a run can leave them out (`EXCLUDE_TAGS=search,detail`).
    # On FerretDB, search is answered from the analytics snapshot and detail by a string `_id`
    # lookup (the one FerretDB v1 pushes down to SQLite); MongoDB answers both from indexes.
    @tag("search")
    @task(4)
    def search(self) -> None:
        params: dict[str, Any] = {"limit": 20, "sort": random.choice(SEARCH_SORTS)}
        if random.random() < 0.6:
            params["genre"] = random.choice(GENRES)
        if random.random() < 0.3:
            params["q"] = random.choice(TITLE_WORDS)
        response = self.client.get(
            f"/v1/movies?{urlencode(params)}", headers=self.headers, name="/v1/movies"
        )
        body = response.json() if response.status_code == 200 else {}
        # Keep the ids seen for the detail pages, and sometimes read the next page.
        self.movie_ids.extend(int(m["id"]) for m in body.get("items", [])[:5])
        del self.movie_ids[:-300]
        if body.get("next_cursor") and random.random() < 0.3:
            self._get("/v1/movies", {**params, "cursor": body["next_cursor"]})

    @tag("detail")
    @task(4)
    def detail(self) -> None:
        self.client.get(
            f"/v1/movies/{random.choice(self.movie_ids)}",
            headers=self.headers,
            name="/v1/movies/{movie_id}",
        )

    @task(1)
    def whoami(self) -> None:
        self._get("/v1/auth/me")
