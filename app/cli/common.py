"""What every command shares: the stderr console, the progress bar, summaries and rejected
rows, and `run`, which starts the local database when it is the one in use and runs a
command's coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pymongo.asynchronous.database import AsyncDatabase
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app import db as database
from app.db import Document, ensure_local_db
from app.services import audit
from app.settings import Settings, get_settings

console = Console(stderr=True)

T = TypeVar("T")


def run(factory: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Start the local database when it is the one in use, then run `factory(settings)`."""
    settings = get_settings()
    ensure_local_db(settings)
    return asyncio.run(factory(settings))


@asynccontextmanager
async def open_db(settings: Settings) -> AsyncIterator[AsyncDatabase[Document]]:
    """`app.db.open_db` for a command: the audit entries it queued are written (or counted as
    dropped) before its client closes."""
    async with database.open_db(settings) as db:
        try:
            yield db
        finally:
            await audit.close(db)


def report_migration(migrated: int) -> None:
    if migrated:
        console.print(f"database upgraded: {migrated} films re-keyed by string _id")


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def print_errors(
    errors: list[tuple[int, str]], *, source: str, settings: Settings, shown: int = 5
) -> None:
    """A count and the first few rejected or unmatched lines on the console; with more, the
    whole list goes to a file beside the local data, named on the console."""
    if not errors:
        return
    for line, reason in errors[:shown]:
        console.print(f"[yellow]line {line}[/yellow]: {reason}")
    if len(errors) <= shown:
        return
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = settings.local_db_dir / "reports" / f"{Path(source).stem}-{stamp}.lines.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"line {n}: {reason}\n" for n, reason in errors), encoding="utf-8")
    console.print(f"... {len(errors)} lines in all; every one is listed in {path}")


def print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on stdout."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def print_summary(title: str, counts: dict[str, int]) -> None:
    table = Table(title=title)
    for key in counts:
        table.add_column(key, justify="right")
    table.add_row(*(str(v) for v in counts.values()))
    Console().print(table)


# `--since` / `--until` of the commands that read a log (`audit`, `monitor log`): read with
# `parse_time`.
Since = Annotated[
    str | None,
    typer.Option(metavar="TIME", help="From this time: ISO date/time (UTC), or 24h, 7d ago"),
]
Until = Annotated[str | None, typer.Option(metavar="TIME", help="Before this time (same forms)")]


def parse_time(text: str, option: str) -> datetime:
    """An ISO date or time (UTC when it names no zone), or a duration ago (`24h`, `7d`)."""
    from app.errors import DomainError
    from app.services.credentials import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(
            text, what=option, maximum=datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
        )
    except DomainError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            "an ISO date or time (2026-01-31, 2026-01-31T08:00:00+01:00) or a duration ago "
            "(30m, 24h, 7d)",
            param_hint=option,
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
