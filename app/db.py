"""Database plumbing: the async client, the URI in use (and the local server behind it), index
creation, the backend. Each collection's documents are read and written by its own module in
`app.services` (e.g. `movies_repo`, `meta_repo`, `credentials`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pymongo import ASCENDING, AsyncMongoClient, IndexModel, uri_parser
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.localdb import LocalDbError, LocalServer
from app.mongo_uri import is_loopback
from app.settings import Settings

Document = dict[str, Any]
INGEST_RUNS = "ingest_runs"  # written by app.services.tmdb_ingest
INGEST_RUN_INDEXES = [IndexModel([("kind", ASCENDING)], name="kind")]


def local_server(settings: Settings) -> LocalServer:
    return LocalServer(directory=settings.local_db_dir.resolve(), port=settings.local_db_port)


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
    if len(nodes) == 1 and is_loopback(nodes[0][0]) and nodes[0][1] == server.port:
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


def tls_options(settings: Settings) -> dict[str, Any]:
    """The client's TLS options from MONGODB_TLS*; none when the URI decides alone."""
    found: dict[str, Any] = {}
    if settings.mongodb_tls_ca_file is not None:
        found["tlsCAFile"] = str(settings.mongodb_tls_ca_file)
    if settings.mongodb_tls_cert_key_file is not None:
        found["tlsCertificateKeyFile"] = str(settings.mongodb_tls_cert_key_file)
    if settings.mongodb_tls_cert_key_password is not None:
        found["tlsCertificateKeyFilePassword"] = (
            settings.mongodb_tls_cert_key_password.get_secret_value()
        )
    if found or settings.mongodb_tls:
        found["tls"] = True
    return found


def make_client(settings: Settings) -> AsyncMongoClient[Document]:
    timeout = settings.mongodb_timeout_ms
    return AsyncMongoClient(
        mongodb_uri(settings),
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=max(timeout * 5, 10_000),
        tz_aware=True,
        appname="tmdb-analytics",
        **tls_options(settings),
    )


@asynccontextmanager
async def open_db(settings: Settings) -> AsyncIterator[AsyncDatabase[Document]]:
    """Database `MONGODB_DB` through a client of its own, closed on the way out: for commands
    (the service owns its client in the lifespan)."""
    client = make_client(settings)
    try:
        yield client[settings.mongodb_db]
    finally:
        await client.close()


async def absent_indexes(
    db: AsyncDatabase[Document], collection: str, models: list[IndexModel]
) -> list[IndexModel]:
    """The indexes of `models` that `collection` lacks (read-only: listIndexes only)."""
    present = {i["name"] async for i in await db[collection].list_indexes()}
    return [m for m in models if m.document["name"] not in present]


async def create_missing_indexes(
    db: AsyncDatabase[Document], collection: str, models: list[IndexModel]
) -> None:
    """Create missing indexes one at a time: FerretDB v1 panics on a multi-index
    `createIndexes` whose indexes all exist already."""
    for model in await absent_indexes(db, collection, models):
        await db[collection].create_indexes([model])


_FERRETDB: dict[str, bool] = {}


async def is_ferretdb(db: AsyncDatabase[Document]) -> bool:
    """FerretDB needs workarounds (see movies_rewrite); real MongoDB takes the direct path."""
    key = str(id(db.client))
    if key not in _FERRETDB:
        info = await db.client.admin.command("buildInfo")
        _FERRETDB[key] = "ferretdbVersion" in info
    return _FERRETDB[key]
