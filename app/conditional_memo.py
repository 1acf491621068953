"""What the conditional-GET middleware (`app.conditional`) remembers: the last tag of each
(path, query, Accept) answered from the analytics snapshot. Apart from the middleware so that
`AppState` can hold it without importing the middleware (which reads `AppState`)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from starlette.types import Scope

MemoKey = tuple[str, bytes, bytes]  # path, raw query string, Accept
MAX_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    tag: str
    build_id: int  # the snapshot the answer was computed on
    headers: tuple[tuple[bytes, bytes], ...]  # those of its 304
    route: Any  # for the access log and metrics: the route a routed request would match


class ConditionalMemo:
    """The last tag of each (path, query, Accept) answered from the snapshot (bounded, LRU).
    One event loop, no locking."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[MemoKey, Entry] = OrderedDict()

    def remember(self, scope: Scope, tag: str, build_id: int, headers: dict[str, str]) -> None:
        key = memo_key(scope)
        self._entries[key] = Entry(
            tag=tag,
            build_id=build_id,
            headers=tuple((k.lower().encode(), v.encode()) for k, v in headers.items()),
            route=scope.get("route"),
        )
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, scope: Scope) -> Entry | None:
        return self._entries.get(memo_key(scope))

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
