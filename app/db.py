"""Database access plumbing: the async client, the URI in use, indexes and the data version."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, ReturnDocument, uri_parser
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.localdb import LocalDbError, LocalServer
from app.settings import Settings

Document = dict[str, Any]
MOVIES = "movies"
META = "meta"
INGEST_RUNS = "ingest_runs"
DATA_VERSION_ID = "data_version"


def movie_key(movie_id: int) -> str:
    """The `_id` of a film: its TMDB id as a string. FerretDB v1 (SQLite) pushes `_id`
    equality down to SQLite only for a string `_id` (about 10x faster lookups and updates);
    the integer `id` field stays the public id."""
    return str(movie_id)


def local_server(settings: Settings) -> LocalServer:
    return LocalServer(directory=settings.local_db_dir.resolve(), port=settings.local_db_port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def managed_local_server(settings: Settings) -> LocalServer | None:
    """The embedded server when the service uses it: `MONGODB_URI` unset, or naming that
    server itself (one loopback host on `LOCAL_DB_PORT`, as `db uri` prints). None for any
    other server, which this project neither starts nor stops."""
    server = local_server(settings)
    uri = settings.mongodb_uri
    if not uri:
        return server
    if not uri.startswith("mongodb://"):
        return None  # mongodb+srv:// (a DNS lookup away) is never the local server
    try:
        nodes = uri_parser.parse_uri(uri)["nodelist"]
    except (PyMongoError, ValueError):
        return None
    if len(nodes) == 1 and _loopback(nodes[0][0]) and nodes[0][1] == server.port:
        return server
    return None


def ensure_local_db(settings: Settings) -> None:
    """Start the embedded database unless `MONGODB_URI` points elsewhere. For commands (the
    app's CLI and training's): says so on stderr, and exits 1 when the server cannot start."""
    import typer  # commands only: the service itself never starts a database
    from rich.console import Console

    server = managed_local_server(settings)
    if server is None:
        return
    console = Console(stderr=True)
    try:
        if server.start():
            console.print(f"[dim]started local database at {server.uri}[/dim]")
    except LocalDbError as exc:
        console.print(f"[red]local database: {exc}[/red]")
        raise typer.Exit(1) from exc


def mongodb_uri(settings: Settings) -> str:
    """`MONGODB_URI` when set, otherwise the embedded local server's URI."""
    return settings.mongodb_uri or local_server(settings).uri


def make_client(settings: Settings) -> AsyncMongoClient[Document]:
    timeout = settings.mongodb_timeout_ms
    return AsyncMongoClient(
        mongodb_uri(settings),
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=max(timeout * 5, 10_000),
        tz_aware=True,
        appname="tmdb-analytics",
    )


MOVIE_INDEXES = [
    IndexModel([("id", ASCENDING)], name="id_unique", unique=True),
    IndexModel([("release_year", ASCENDING)], name="release_year"),
    IndexModel([("genres", ASCENDING)], name="genres"),
    IndexModel([("original_language", ASCENDING)], name="original_language"),
    IndexModel([("production_companies", ASCENDING)], name="production_companies"),
    IndexModel([("vote_count", DESCENDING)], name="vote_count"),
    IndexModel([("revenue", DESCENDING)], name="revenue"),
    IndexModel([("popularity", DESCENDING)], name="popularity"),
    IndexModel([("title_normalized", ASCENDING)], name="title_normalized"),
]


INDEXES = {
    MOVIES: MOVIE_INDEXES,
    INGEST_RUNS: [IndexModel([("kind", ASCENDING)], name="kind")],
}


async def _missing(db: AsyncDatabase[Document], collection: str, kind: str) -> list[IndexModel]:
    present = {i["name"] async for i in await db[collection].list_indexes()}
    return [m for m in INDEXES[kind] if m.document["name"] not in present]


async def missing_indexes(db: AsyncDatabase[Document]) -> bool:
    """Whether any collection lacks one of its indexes (read-only: listIndexes only)."""
    for collection in INDEXES:
        if await _missing(db, collection, collection):
            return True
    return False


async def ensure_indexes(
    db: AsyncDatabase[Document], targets: dict[str, str] | None = None
) -> None:
    """Create missing indexes one at a time: FerretDB v1 panics on a multi-index
    `createIndexes` whose indexes all exist already.

    `targets` maps a collection to the index set it should get (e.g. a staging copy of
    `movies`); by default every collection gets its own.
    """
    for collection, kind in (targets or {c: c for c in INDEXES}).items():
        for model in await _missing(db, collection, kind):
            await db[collection].create_indexes([model])


_FERRETDB: dict[str, bool] = {}


async def is_ferretdb(db: AsyncDatabase[Document]) -> bool:
    """FerretDB needs workarounds (see movies_store); real MongoDB takes the direct path."""
    key = str(id(db.client))
    if key not in _FERRETDB:
        info = await db.client.admin.command("buildInfo")
        _FERRETDB[key] = "ferretdbVersion" in info
    return _FERRETDB[key]


async def bump_data_version(db: AsyncDatabase[Document]) -> int:
    """Every write batch bumps this; analytics caches key on it."""
    doc = await db[META].find_one_and_update(
        {"_id": DATA_VERSION_ID},
        {"$inc": {"version": 1}, "$set": {"updated_at": datetime.now(UTC)}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return int(doc["version"]) if doc else 0


async def get_data_version(db: AsyncDatabase[Document]) -> int:
    doc = await db[META].find_one({"_id": DATA_VERSION_ID})
    return int(doc["version"]) if doc else 0
