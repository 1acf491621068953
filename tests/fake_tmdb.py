"""A local HTTP server that speaks TMDB API v3's format, for tests of the client and ingest.

It serves `/discover/movie` (page size, 500-page cap and release-date filters like TMDB),
`/movie/{id}` with `append_to_response=credits,keywords`, `/movie/changes` (windows of at
most 14 days) and `/configuration`, and writes TMDB's daily id export file (`id_export`).
Films without a release date (`"release_date": ""`, as TMDB has them) are listed by discover
only without a date filter; where a release-date sort puts them is not documented, so
`undated_first` chooses (default: last in ascending order). Adult films are listed only with
`include_adult=true`. Errors come with TMDB's bodies: 401 for a wrong token (code 7),
404 for an unknown id (34), 400 for a page past the cap (22), 422 for a long changes window
(20), 429 with `Retry-After` past `rate_limit` requests in any sliding window of one second
(25), and 503 now and then (9), from a seeded random generator so failures replay alike.

    fake = FakeTmdb(catalogue({2001: 30, 2002: 50}))
    with fake.serve() as base_url:
        ...  # TmdbClient(TOKEN, base_url)
"""

from __future__ import annotations

import gzip
import json
import math
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "fake-tmdb-read-access-token"
GENRES = [
    (28, "Action"),
    (12, "Adventure"),
    (35, "Comedy"),
    (18, "Drama"),
    (27, "Horror"),
    (878, "Science Fiction"),
    (10749, "Romance"),
]
DETAIL_ONLY = ("credits", "keywords")


def make_film(movie_id: int, release_date: str) -> dict[str, Any]:
    """A `/movie/{id}` answer with credits and keywords, deterministic per id."""
    r = random.Random(movie_id)
    title = f"Film {movie_id}"
    budget = r.choice([0, r.randrange(1_000_000, 200_000_000)])
    revenue = r.choice([0, r.randrange(1_000_000, 900_000_000)])
    genres = r.sample(GENRES, k=r.randint(1, 3))
    return {
        "adult": False,
        "backdrop_path": None,
        "belongs_to_collection": (
            {"id": movie_id * 10, "name": f"{title} Collection", "poster_path": None}
            if movie_id % 7 == 0
            else None
        ),
        "budget": budget,
        "genres": [{"id": gid, "name": name} for gid, name in genres],
        "homepage": "",
        "id": movie_id,
        "imdb_id": f"tt{movie_id:07d}",
        "origin_country": ["US"],
        "original_language": r.choice(["en", "en", "fr", "ja"]),
        "original_title": title,
        "overview": f"The story of film {movie_id}.",
        "popularity": round(r.uniform(0.5, 120.0), 3),
        "poster_path": None,
        "production_companies": [
            {"id": 1 + movie_id % 5, "logo_path": None, "name": f"Studio {movie_id % 5}"}
        ],
        "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
        "release_date": release_date,
        "revenue": revenue,
        "runtime": r.randint(75, 190),
        "spoken_languages": [{"english_name": "English", "iso_639_1": "en", "name": "English"}],
        "status": "Released",
        "tagline": "",
        "title": title,
        "video": False,
        "vote_average": round(r.uniform(1.0, 9.5), 1),
        "vote_count": r.randint(0, 20_000),
        "credits": {
            "cast": [
                {
                    "adult": False,
                    "id": 10_000 + movie_id * 3 + k,
                    "known_for_department": "Acting",
                    "name": f"Actor {(movie_id + k) % 97}",
                    "character": f"Role {k}",
                    "credit_id": f"c{movie_id}-{k}",
                    "order": k,
                }
                for k in range(4)
            ],
            "crew": [
                {
                    "id": 50_000 + movie_id % 31,
                    "name": f"Director {movie_id % 31}",
                    "department": "Directing",
                    "job": "Director",
                },
                {
                    "id": 60_000 + movie_id % 43,
                    "name": f"Writer {movie_id % 43}",
                    "department": "Writing",
                    "job": "Screenplay",
                },
                {"id": 70_000, "name": "Gaffer Person", "department": "Lighting", "job": "Gaffer"},
            ],
        },
        "keywords": {
            "keywords": [
                {"id": 900 + (movie_id + k) % 50, "name": f"keyword {(movie_id + k) % 50}"}
                for k in range(3)
            ]
        },
    }


def catalogue(per_year: dict[int, int], first_id: int = 100, spread_days: int = 365) -> list[Any]:
    """`per_year[y]` films released in year y, spread over its first `spread_days` days."""
    films: list[dict[str, Any]] = []
    movie_id = first_id
    for year, count in sorted(per_year.items()):
        for k in range(count):
            day = date(year, 1, 1) + timedelta(days=(k * spread_days) // max(count, 1))
            films.append(make_film(movie_id, day.isoformat()))
            movie_id += 1
    return films


def undated(count: int, first_id: int) -> list[Any]:
    """`count` films without a release date (TMDB answers `"release_date": ""`)."""
    return [make_film(movie_id, "") for movie_id in range(first_id, first_id + count)]


def id_export(path: Path, films: Iterable[dict[str, Any]], extra_lines: Iterable[str] = ()) -> Path:
    """Write TMDB's daily id export (`movie_ids_MM_DD_YYYY.json.gz`): gzip, one JSON object per
    line, `{"adult":false,"id":3924,"original_title":"Blondie","popularity":2.9,"video":false}`;
    `extra_lines` are written as they are, after the films (for malformed lines)."""
    lines = [
        json.dumps(
            {
                "adult": bool(f.get("adult")),
                "id": f["id"],
                "original_title": f["original_title"],
                "popularity": f["popularity"],
                "video": bool(f.get("video")),
            },
            separators=(",", ":"),
        )
        for f in films
    ]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join([*lines, *extra_lines]) + "\n")
    return path


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"success": False, "status_code": code, "status_message": message}
    return JSONResponse(body, status_code=status, headers=headers)


INVALID_PAGE = (
    400,
    22,
    "Invalid page: Pages start at 1 and max at 500. They are expected to be an integer.",
)


class FakeTmdb:
    """State of the fake: films, listed-but-deleted ids, the change log, and counters."""

    def __init__(
        self,
        films: Iterable[dict[str, Any]] = (),
        *,
        token: str = TOKEN,
        page_size: int = 20,
        max_page: int = 500,
        rate_limit: int | None = 40,
        retry_after: int = 1,
        error_rate: float = 0.0,
        seed: int = 0,
        missing: Iterable[int] = (),
        undated_first: bool = False,
    ) -> None:
        self.films: dict[int, dict[str, Any]] = {int(f["id"]): f for f in films}
        self.missing = set(missing)  # films discover lists but details answer 404 for (deleted)
        self.token = token
        self.page_size = page_size
        self.max_page = max_page
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.error_rate = error_rate
        self.undated_first = undated_first  # where an ascending release-date sort puts them
        self.changes: list[tuple[date, int]] = []
        self.stats: Counter[str] = Counter()
        self.detail_hits: Counter[int] = Counter()
        self.pages_seen: list[int] = []
        self._random = random.Random(seed)
        self._window: deque[float] = deque()
        self.app = Starlette(
            routes=[
                Route("/3/discover/movie", self.discover),
                Route("/3/movie/changes", self.movie_changes),
                Route("/3/movie/{movie_id:int}", self.details),
                Route("/3/configuration", self.configuration),
            ]
        )

    # --- mutations used by tests ------------------------------------------------------------

    def change(self, movie_id: int, day: date, **fields: Any) -> None:
        """Edit (or create) a film and log the change on `day`."""
        if movie_id in self.films:
            self.films[movie_id].update(fields)
        elif fields.get("release_date") is not None:
            self.films[movie_id] = {**make_film(movie_id, fields["release_date"]), **fields}
        self.changes.append((day, movie_id))

    # --- the gate every request passes ------------------------------------------------------

    def _gate(self, request: Request) -> Response | None:
        self.stats["requests"] += 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            self.stats["401"] += 1
            return _error(401, 7, "Invalid API key: You must be granted a valid key.")
        if self.rate_limit is not None:
            now = time.monotonic()
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                self.stats["429"] += 1
                return _error(
                    429,
                    25,
                    f"Your request count ({len(self._window) + 1}) is over the allowed limit"
                    f" of ({self.rate_limit}).",
                    {"Retry-After": str(self.retry_after)},
                )
            self._window.append(now)
        if self.error_rate and self._random.random() < self.error_rate:
            self.stats["503"] += 1
            return _error(
                503, 9, "Service offline: This service is temporarily offline, try again later."
            )
        return None

    def _page(self, request: Request) -> int | None:
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            return None
        if not 1 <= page <= self.max_page:
            return None
        self.pages_seen.append(page)
        return page

    def _paged(self, items: list[Any], page: int, size: int) -> dict[str, Any]:
        return {
            "page": page,
            "results": items[(page - 1) * size : page * size],
            "total_pages": math.ceil(len(items) / size),
            "total_results": len(items),
        }

    # --- endpoints --------------------------------------------------------------------------

    async def discover(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        self.stats["discover"] += 1
        page = self._page(request)
        if page is None:
            self.stats["400"] += 1
            return _error(*INVALID_PAGE)
        q = request.query_params
        gte, lte = q.get("primary_release_date.gte"), q.get("primary_release_date.lte")
        dated = gte is not None or lte is not None
        adult = q.get("include_adult") == "true"
        listed = [
            f
            for f in self.films.values()
            if (adult or not f.get("adult"))
            and (not dated or f.get("release_date"))
            and (gte is None or f["release_date"] >= gte)
            and (lte is None or f["release_date"] <= lte)
        ]
        sort_by = q.get("sort_by", "popularity.desc")
        if sort_by.startswith("primary_release_date"):
            # Films without a date go together at one end of the order, by id.
            nulls = "" if self.undated_first else "~"
            listed.sort(key=lambda f: (f["release_date"] or nulls, f["id"]))
        else:
            listed.sort(key=lambda f: (-f["popularity"], f["id"]))
        if sort_by.endswith(".desc") and sort_by.startswith("primary_release_date"):
            listed.reverse()
        results = [
            {
                "adult": bool(f.get("adult")),
                "backdrop_path": None,
                "genre_ids": [g["id"] for g in f["genres"]],
                "id": f["id"],
                "original_language": f["original_language"],
                "original_title": f["original_title"],
                "overview": f["overview"],
                "popularity": f["popularity"],
                "poster_path": None,
                "release_date": f["release_date"],
                "title": f["title"],
                "video": False,
                "vote_average": f["vote_average"],
                "vote_count": f["vote_count"],
            }
            for f in listed
        ]
        return JSONResponse(self._paged(results, page, self.page_size))

    async def details(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        movie_id = int(request.path_params["movie_id"])
        self.stats["details"] += 1
        film = self.films.get(movie_id)
        if film is None or movie_id in self.missing:
            self.stats["404"] += 1
            return _error(404, 34, "The resource you requested could not be found.")
        self.detail_hits[movie_id] += 1
        wanted = request.query_params.get("append_to_response", "").split(",")
        body = {k: v for k, v in film.items() if k not in DETAIL_ONLY or k in wanted}
        return JSONResponse(body)

    async def movie_changes(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        self.stats["changes"] += 1
        page = self._page(request)
        if page is None:
            self.stats["400"] += 1
            return _error(*INVALID_PAGE)
        try:
            end = date.fromisoformat(request.query_params.get("end_date", date.today().isoformat()))
            start = date.fromisoformat(
                request.query_params.get("start_date", (end - timedelta(days=1)).isoformat())
            )
        except ValueError:
            return _error(400, 23, "Invalid date: Format needs to be YYYY-MM-DD.")
        if (end - start).days > 14 or end < start:
            self.stats["422"] += 1
            return _error(422, 20, "Invalid date range: Should be a range no longer than 14 days.")
        ids = sorted({i for day, i in self.changes if start <= day <= end})
        return JSONResponse(self._paged([{"id": i, "adult": False} for i in ids], page, 100))

    async def configuration(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        return JSONResponse({"images": {"base_url": "http://image.tmdb.org/t/p/"}})

    # --- the server -------------------------------------------------------------------------

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Run on 127.0.0.1 on a free port in a background thread; yields the base URL."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("fake TMDB server did not start")
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}/3"
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
