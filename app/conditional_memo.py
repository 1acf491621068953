"""What the answers-before-routing middleware (`app.conditional`) remembers: for each
(path, query, Accept) last answered from the analytics snapshot, its tag, the headers of its
304 and, once a 200 of it has been sent, that 200's exact head and body. Apart from the
middleware so that `AppState` can hold it without importing the middleware (which reads
`AppState`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

MemoKey = tuple[str, bytes, bytes]  # path, raw query string, Accept
MAX_ENTRIES = 4096
# Bodies are the analytics engine's cached bytes (the very same objects while its cache holds
# them), so this mostly bounds what outlives that cache. A bigger answer is never remembered:
# it is rare and costs its serialization anyway, next to which routing is small.
MAX_BODY_BYTES = 1 << 20
MAX_TOTAL_BODY_BYTES = 64 << 20
# Where a route leaves the entry it remembered for a 200, in the request's `scope["state"]`:
# the middleware then keeps that 200's bytes in it (see `app.conditional`).
MEMO_ENTRY = "conditional_memo_entry"

RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class Entry:
    tag: str
    build_id: int  # the snapshot the answer was computed on
    headers: RawHeaders  # those of its 304
    route: Any  # for the access log and metrics: the route a routed request would match
    # The 200 as the route sent it (`X-Data-Stale` left out: added when it applies), once
    # one was sent; None until then.
    ok_headers: RawHeaders | None = None
    body: bytes | None = field(default=None, repr=False)


class ConditionalMemo:
    """The last answer of each (path, query, Accept) from the snapshot (bounded in entries and
    in body bytes, LRU). One event loop, no locking."""

    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_total_body_bytes: int = MAX_TOTAL_BODY_BYTES,
    ) -> None:
        self.max_entries = max_entries
        self.max_body_bytes = max_body_bytes
        self.max_total_body_bytes = max_total_body_bytes
        self._entries: OrderedDict[MemoKey, Entry] = OrderedDict()
        self._body_bytes = 0

    def remember(self, scope: Scope, tag: str, build_id: int, headers: dict[str, str]) -> Entry:
        """Remember the tag of this request's answer (its 200 is kept later, by `keep_body`)."""
        key = memo_key(scope)
        self._drop(key)
        entry = Entry(
            tag=tag,
            build_id=build_id,
            headers=tuple((k.lower().encode(), v.encode()) for k, v in headers.items()),
            route=scope.get("route"),
        )
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))
        return entry

    def keep_body(self, scope: Scope, entry: Entry, headers: RawHeaders, body: bytes) -> None:
        """Keep the 200 sent for `entry` (if it is still the one remembered for `scope`)."""
        key = memo_key(scope)
        if self._entries.get(key) is not entry or entry.body is not None:
            return
        if len(body) > self.max_body_bytes:
            return
        entry.ok_headers, entry.body = headers, body
        self._body_bytes += len(body)
        self._entries.move_to_end(key)
        while self._body_bytes > self.max_total_body_bytes:
            self._drop(next(iter(self._entries)))

    def get(self, scope: Scope) -> Entry | None:
        return self._entries.get(memo_key(scope))

    def forget(self, scope: Scope) -> None:
        """Drop the entry of `scope` (one computed on a snapshot that is gone)."""
        self._drop(memo_key(scope))

    def _drop(self, key: MemoKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.body is not None:
            self._body_bytes -= len(entry.body)

    @property
    def body_bytes(self) -> int:
        return self._body_bytes

    def __len__(self) -> int:
        return len(self._entries)


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def memo_key(scope: Scope) -> MemoKey:
    accept = header(scope, b"accept") or b""
    return (str(scope["path"]), bytes(scope.get("query_string", b"")), accept)
