"""What every command shares: the stderr console, the progress bar, summaries and rejected
rows, and `run`, which starts the local database when it is the one in use and runs a
command's coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

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

from app.db import ensure_local_db
from app.settings import Settings, get_settings

console = Console(stderr=True)

T = TypeVar("T")


def run(factory: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Start the local database when it is the one in use, then run `factory(settings)`."""
    settings = get_settings()
    ensure_local_db(settings)
    return asyncio.run(factory(settings))


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


def print_errors(errors: list[tuple[int, str]], limit: int = 50) -> None:
    for line, reason in errors[:limit]:
        console.print(f"[yellow]line {line}[/yellow]: {reason}")
    if len(errors) > limit:
        console.print(f"... and {len(errors) - limit} more rejected rows")


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
