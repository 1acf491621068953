"""Signed page cursors, for every paged listing (`/v1/movies`, `/v1/audit`).

A cursor is `<payload>.<signature>`: the payload is base64url JSON, the signature its
HMAC-SHA256 under a key derived from a token signing key (`Settings.cursor_keys`, under a label
of its own, so that a cursor signature never passes for a token's). Clients can read a cursor
but not forge one, so what it carries can go into a database query once its shape is checked.
The first key signs; any listed key verifies, so a signing-key rotation does not break the
paging in progress.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

Keys = bytes | tuple[bytes, ...]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def _reject_constant(name: str) -> None:
    raise ValueError(f"not a number: {name}")


def encode(data: Mapping[str, Any], key: bytes) -> str:
    """`data` as a cursor signed with `key`."""
    payload = _b64(json.dumps(dict(data)).encode())
    return f"{payload}.{_signature(key, payload)}"


def decode(cursor: str, keys: Keys) -> Any:
    """What a cursor signed with one of `keys` carries (the JSON value, unchecked beyond that:
    the caller checks its shape). ValueError for anything unsigned, tampered or malformed."""
    payload, _, signature = cursor.partition(".")
    candidates = (keys,) if isinstance(keys, bytes) else keys
    if not signature or not any(
        hmac.compare_digest(signature.encode(), _signature(key, payload).encode())
        for key in candidates
    ):
        raise ValueError("cursor signature does not verify")
    try:
        return json.loads(_unb64(payload), parse_constant=_reject_constant)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("cursor payload is not JSON") from None
