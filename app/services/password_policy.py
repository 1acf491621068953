"""The password policy, applied wherever a password is set (user creation and password change,
from the CLI and over HTTP): at least `PASSWORD_MIN_LENGTH` characters (12 by default), not the
username, and not one of the most common passwords.

The common passwords ship with the package (`app/data/common-passwords.txt.gz`, 11,611 entries
from zxcvbn's list; `app/data/common-passwords.SOURCE.md` says where from and under which
license). They are compared case-insensitively, as typed and with trailing digits and
punctuation removed (so `Password2024!` counts as `password`).
"""

from __future__ import annotations

import gzip
import string
from functools import lru_cache
from importlib import resources

from app.errors import InvalidQueryError
from app.settings import MAX_PASSWORD_LENGTH

COMMON_PASSWORDS_FILE = "common-passwords.txt.gz"
_TRAILING = string.digits + string.punctuation + " "


class WeakPasswordError(InvalidQueryError):
    """A password the policy refuses (400 problem+json; the CLI prints the reason)."""

    title = "Password refused"


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    data = resources.files("app").joinpath("data", COMMON_PASSWORDS_FILE).read_bytes()
    return frozenset(gzip.decompress(data).decode().split())


def is_common(password: str) -> bool:
    folded = password.casefold()
    common = common_passwords()
    return folded in common or folded.rstrip(_TRAILING) in common


def check_password(username: str, password: str, min_length: int) -> None:
    """Raise `WeakPasswordError` saying why, when the policy refuses `password`."""
    if len(password) < min_length:
        raise WeakPasswordError(f"password must be at least {min_length} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPasswordError(f"password must be at most {MAX_PASSWORD_LENGTH} characters long")
    if password.strip().casefold() == username.casefold():
        raise WeakPasswordError("password must not be the username")
    if is_common(password):
        raise WeakPasswordError("password is too common; choose a less guessable one")
