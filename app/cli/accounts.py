"""`tmdb-analytics users ...` and `keys ...`: user accounts and API keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pymongo.asynchronous.database import AsyncDatabase

from app.cli.common import console, print_table, run
from app.db import Document, open_db
from app.services.credentials import Role
from app.settings import Settings

users_app = typer.Typer(help="Manage user accounts (they log in at POST /v1/auth/token).")
keys_app = typer.Typer(help="Manage API keys for partner systems (sent as X-API-Key).")

T = TypeVar("T")


def _with_db(action: Callable[[AsyncDatabase[Document]], Awaitable[T]]) -> T:
    """Run one credentials operation against the database; a refused operation (duplicate
    user, unknown key, ...) or an unreachable database ends with a message and exit code 1."""
    from pymongo.errors import PyMongoError

    from app.errors import DomainError

    async def go(settings: Settings) -> T:
        async with open_db(settings) as db:
            return await action(db)

    try:
        return run(go)
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    except PyMongoError as exc:
        console.print(f"[red]database unavailable: {exc.__class__.__name__}[/red]")
        raise typer.Exit(1) from exc


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Username (letters, digits, _ . @ -)")],
    role: Annotated[Role, typer.Option(help="viewer, predictor or admin")] = Role.viewer,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="At least 8 characters; prompted for when omitted (keeps it out of history)",
        ),
    ] = "",
) -> None:
    """Create a user who can log in for a bearer token."""
    from app.services.credentials import create_user

    user = _with_db(lambda db: create_user(db, name, role, password))
    console.print(f"created user {user.username!r} with role {user.role.value}")


@users_app.command("list")
def users_list() -> None:
    """List users and their roles."""
    from app.services.credentials import list_users

    users = _with_db(list_users)
    print_table(
        f"{len(users)} users",
        ("username", "role", "created"),
        [(u.username, u.role.value, f"{u.created_at:%Y-%m-%d %H:%M}") for u in users],
    )


@users_app.command("delete")
def users_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a user (tokens already issued stay valid until they expire)."""
    from app.services.credentials import delete_user

    _with_db(lambda db: delete_user(db, name))
    console.print(f"deleted user {name!r}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for")],
    role: Annotated[Role, typer.Option(help="viewer, predictor or admin")] = Role.viewer,
) -> None:
    """Create an API key and print it once on stdout (only its hash is stored)."""
    from app.services.credentials import create_api_key

    record, key = _with_db(lambda db: create_api_key(db, name, role))
    console.print(
        f"created API key {record.key_id} ({record.name!r}, role {record.role.value}); "
        "store it now, it cannot be shown again:"
    )
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (ids, names, roles, status; never the keys themselves)."""
    from app.services.credentials import list_api_keys

    keys = _with_db(list_api_keys)
    print_table(
        f"{len(keys)} API keys",
        ("key_id", "name", "role", "created", "status"),
        [
            (
                k.key_id,
                k.name,
                k.role.value,
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active",
            )
            for k in keys
        ],
    )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key_id from `keys list`")]) -> None:
    """Revoke an API key (running services stop accepting it within API_KEY_CACHE_SECONDS)."""
    from app.services.credentials import revoke_api_key

    record = _with_db(lambda db: revoke_api_key(db, key_id))
    console.print(f"revoked API key {record.key_id} ({record.name!r})")
