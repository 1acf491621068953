"""`tmdb-analytics users ...` and `keys ...`: user accounts and API keys.

Every change goes through `app.services.accounts`, as the admin API's do, so it is checked and
audited alike (the actor is `cli:<OS user>`, the address `cli`). A running service sees a change
within TOKEN_REVOCATION_CACHE_SECONDS (users) or API_KEY_CACHE_SECONDS (keys).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeVar

import typer
from pymongo.asynchronous.database import AsyncDatabase

from app.cli.common import console, open_db, print_table, run
from app.db import Document
from app.errors import DomainError
from app.services.credentials import Role
from app.settings import Settings

users_app = typer.Typer(help="Manage user accounts (they log in at POST /v1/auth/token).")
keys_app = typer.Typer(help="Manage API keys for partner systems (sent as X-API-Key).")

T = TypeVar("T")
PASSWORD_HELP = (
    "At least PASSWORD_MIN_LENGTH (12) characters, not the username, not a common password; "
    "prompted for when omitted (keeps it out of shell history)"
)


def _with_db(action: Callable[[AsyncDatabase[Document], Settings], Awaitable[T]]) -> T:
    """Run one credentials operation against the database; a refused operation (duplicate
    user, unknown key, weak password, ...) or an unreachable database ends with a message and
    exit code 1."""
    from pymongo.errors import PyMongoError

    async def go(settings: Settings) -> T:
        async with open_db(settings) as db:
            return await action(db, settings)

    try:
        return run(go)
    except DomainError as exc:
        console.print(f"[red]{exc.detail}[/red]")
        raise typer.Exit(1) from exc
    except PyMongoError as exc:
        console.print(f"[red]database unavailable: {exc.__class__.__name__}[/red]")
        raise typer.Exit(1) from exc


def _when(value: datetime | None, empty: str = "-") -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else empty


def _password_option(prompt: bool | str = True) -> typer.models.OptionInfo:
    option: typer.models.OptionInfo = typer.Option(
        prompt=prompt, hide_input=True, confirmation_prompt=True, help=PASSWORD_HELP
    )
    return option


# --- users ---------------------------------------------------------------------------------


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="Username (letters, digits, _ . @ -)")],
    role: Annotated[Role, typer.Option(help="viewer, predictor or admin")] = Role.viewer,
    password: Annotated[str, _password_option()] = "",
) -> None:
    """Create a user who can log in for a bearer token."""
    from app.services import accounts
    from app.services.audit import cli_origin

    user = _with_db(
        lambda db, settings: accounts.create_user(
            db,
            cli_origin(),
            name,
            role,
            password,
            min_password_length=settings.password_min_length,
        )
    )
    console.print(f"created user {user.username!r} with role {user.role.value}")


@users_app.command("list")
def users_list() -> None:
    """List users: role, when the password was changed, status (never a password)."""
    from app.services.credentials import list_users

    async def listing(db: AsyncDatabase[Document], settings: Settings) -> list[tuple[str, ...]]:
        max_age = settings.password_max_age_days
        return [
            (
                u.username,
                u.role.value,
                _when(u.created_at),
                _when(u.password_changed_at)
                + (" (expired)" if u.password_expired(max_age) else ""),
                "disabled" if u.disabled else "active",
            )
            for u in await list_users(db)
        ]

    rows = _with_db(listing)
    print_table(
        f"{len(rows)} users", ("username", "role", "created", "password changed", "status"), rows
    )


@users_app.command("delete")
def users_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a user (their tokens stop working within TOKEN_REVOCATION_CACHE_SECONDS)."""
    from app.services import accounts
    from app.services.audit import cli_origin

    _with_db(lambda db, _: accounts.delete_user(db, cli_origin(), name))
    console.print(f"deleted user {name!r}")


@users_app.command("set-password")
def users_set_password(
    name: Annotated[str, typer.Argument()],
    password: Annotated[str, _password_option("New password")] = "",
) -> None:
    """Set a user's password (a reset, or a routine change); their tokens are revoked."""
    from app.services import accounts
    from app.services.audit import cli_origin

    _with_db(
        lambda db, settings: accounts.set_password(
            db, cli_origin(), name, password, min_password_length=settings.password_min_length
        )
    )
    console.print(f"password of {name!r} changed; their tokens are revoked")


@users_app.command("revoke-tokens")
def users_revoke_tokens(name: Annotated[str, typer.Argument()]) -> None:
    """Revoke every token issued to a user so far (they can log in again)."""
    from app.services import accounts
    from app.services.audit import cli_origin

    _with_db(lambda db, _: accounts.revoke_tokens(db, cli_origin(), name))
    console.print(f"tokens of {name!r} revoked (services notice within seconds)")


@users_app.command("set-role")
def users_set_role(
    name: Annotated[str, typer.Argument()],
    role: Annotated[Role, typer.Argument(help="viewer, predictor or admin")],
) -> None:
    """Change a user's role (their tokens, which carry the old one, are revoked)."""
    from app.services import accounts
    from app.services.audit import cli_origin

    user = _with_db(lambda db, _: accounts.update_user(db, cli_origin(), name, role=role))
    console.print(f"user {user.username!r} now has role {user.role.value}")


@users_app.command("disable")
def users_disable(name: Annotated[str, typer.Argument()]) -> None:
    """Disable a user: no login, tokens revoked (until `users enable`)."""
    from app.services import accounts
    from app.services.audit import cli_origin

    _with_db(lambda db, _: accounts.update_user(db, cli_origin(), name, disabled=True))
    console.print(f"user {name!r} disabled")


@users_app.command("enable")
def users_enable(name: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled user again."""
    from app.services import accounts
    from app.services.audit import cli_origin

    _with_db(lambda db, _: accounts.update_user(db, cli_origin(), name, disabled=False))
    console.print(f"user {name!r} enabled")


# --- API keys ------------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for")],
    role: Annotated[Role, typer.Option(help="viewer, predictor or admin")] = Role.viewer,
    expires_in: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Lifetime: days, hours or minutes (90d, 24h, 30m)"),
    ] = None,
) -> None:
    """Create an API key and print it once on stdout (only its hash is stored)."""
    from app.services import accounts
    from app.services.audit import cli_origin
    from app.services.credentials import MAX_KEY_LIFETIME, parse_duration

    lifetime = None
    if expires_in is not None:
        try:
            lifetime = parse_duration(expires_in, what="--expires-in", maximum=MAX_KEY_LIFETIME)
        except DomainError as exc:
            raise typer.BadParameter(exc.detail, param_hint="--expires-in") from exc
    record, key = _with_db(
        lambda db, _: accounts.create_key(db, cli_origin(), name, role, expires_in=lifetime)
    )
    expiry = f", expires {_when(record.expires_at)} UTC" if record.expires_at else ""
    console.print(
        f"created API key {record.key_id} ({record.name!r}, role {record.role.value}{expiry}); "
        "store it now, it cannot be shown again:"
    )
    print(key)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (ids, names, roles, expiry, last use, status; never the keys)."""
    from app.services.credentials import list_api_keys

    keys = _with_db(lambda db, _: list_api_keys(db))
    print_table(
        f"{len(keys)} API keys",
        ("key_id", "name", "role", "created", "expires", "last used", "status"),
        [
            (
                k.key_id,
                k.name,
                k.role.value,
                _when(k.created_at),
                _when(k.expires_at, "never"),
                _when(k.last_used_at, "never"),
                f"revoked {_when(k.revoked_at)}" if k.revoked_at else k.status(),
            )
            for k in keys
        ],
    )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key_id from `keys list`")]) -> None:
    """Revoke an API key (running services stop accepting it within API_KEY_CACHE_SECONDS)."""
    from app.services import accounts
    from app.services.audit import cli_origin

    record = _with_db(lambda db, _: accounts.revoke_key(db, cli_origin(), key_id))
    console.print(f"revoked API key {record.key_id} ({record.name!r})")


@keys_app.command("delete")
def keys_delete(key_id: Annotated[str, typer.Argument(help="The key_id from `keys list`")]) -> None:
    """Delete an API key (revoke keeps its record; delete removes it)."""
    from app.services import accounts
    from app.services.audit import cli_origin

    record = _with_db(lambda db, _: accounts.delete_key(db, cli_origin(), key_id))
    console.print(f"deleted API key {record.key_id} ({record.name!r})")


@keys_app.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="The key_id from `keys list`")],
    grace: Annotated[
        str,
        typer.Option(
            metavar="DURATION",
            help="How long the old secret keeps working (0m: not at all; at most 30d)",
        ),
    ] = "24h",
) -> None:
    """Give a key a new secret, printed once on stdout; the old one works for --grace more."""
    from app.services import accounts
    from app.services.audit import cli_origin
    from app.services.credentials import MAX_ROTATION_GRACE, parse_duration

    try:
        period = parse_duration(grace, what="--grace", maximum=MAX_ROTATION_GRACE)
    except DomainError as exc:
        raise typer.BadParameter(exc.detail, param_hint="--grace") from exc
    record, key = _with_db(lambda db, _: accounts.rotate_key(db, cli_origin(), key_id, period))
    console.print(
        f"rotated API key {record.key_id} ({record.name!r}); the old secret works until "
        f"{_when(record.previous_valid_until)} UTC. The new key, shown once:"
    )
    print(key)
