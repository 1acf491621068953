"""`tmdb-analytics audit`: read the audit log (newest first), as a table or JSON lines."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer

from app.cli.common import Since, Until, console, open_db, parse_time, print_table, run
from app.db import Document
from app.settings import Settings

MAX_ENTRIES = 100_000


def audit_command(
    since: Since = None,
    until: Until = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. auth.login, key.rotate")
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor, e.g. user:alice, key:3f9c2a7b1d04")
    ] = None,
    outcome: Annotated[
        Literal["success", "failure"] | None, typer.Option(help="success or failure")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_ENTRIES, help="At most this many entries")
    ] = 50,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of a table")
    ] = False,
) -> None:
    """Show the audit log, newest first: who did what, when, from where, and the outcome."""
    from pymongo.errors import PyMongoError

    from app.errors import DomainError
    from app.services import audit

    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None

    async def go(settings: Settings) -> list[Document]:
        found: list[Document] = []
        cursor: str | None = None
        async with open_db(settings) as db:
            while len(found) < limit:
                query = audit.AuditQuery(
                    action=action,
                    actor=actor,
                    outcome=outcome,
                    since=start,
                    until=end,
                    limit=min(audit.MAX_PAGE, limit - len(found)),
                    cursor=cursor,
                )
                page, cursor = await audit.list_entries(db, query, settings.cursor_keys)
                found.extend(page)
                if cursor is None:
                    break
        return found

    try:
        entries = run(go)
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    except PyMongoError as exc:
        console.print(f"[red]database unavailable: {exc.__class__.__name__}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        for doc in entries:
            print(json.dumps({"id": doc.pop("_id"), **doc}, default=str))
        return
    print_table(
        f"{len(entries)} audit entries, newest first",
        ("when (UTC)", "action", "actor", "from", "target", "outcome", "details"),
        [
            (
                f"{doc['at']:%Y-%m-%d %H:%M:%S}",
                doc["action"],
                doc["actor"],
                doc.get("source_ip") or "-",
                doc.get("target") or "-",
                doc["outcome"],
                json.dumps(doc.get("details") or {}, default=str),
            )
            for doc in entries
        ],
    )
