"""HTTP caching and representations for the read endpoints (`/v1/analytics/*`, `/v1/movies`).

* **Representations**: JSON (the default) or CSV, chosen by `?format=` or else by `Accept`
  (RFC 9110 section 12.5.1: the most specific matching range gives each type its quality;
  the best quality above 0 wins, JSON on a tie). No acceptable type: 406 problem+json.
* **Entity tags**: an answer is a pure function of (data version, endpoint, normalized query,
  representation, code revision), so its tag is a digest of exactly that, and a conditional
  GET can be decided before anything is computed or serialized. Tags are strong (the same key
  always gives the same bytes) and the same in every worker and replica.
* **If-None-Match** (RFC 9110 section 13.1.2): `*` or any listed tag equal to the current one
  by the weak comparison (`W/` ignored) gives 304 with no body.
* **Cache-Control**: `private, max-age=N, must-revalidate` (N = `HTTP_CACHE_SECONDS`): answers
  depend on the caller's credential being valid, so shared caches keep none; a browser reuses
  one for N seconds, then revalidates with its tag. `Vary` names what selects the answer.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from typing import Literal

from fastapi.responses import Response
from prometheus_client import Counter
from starlette.types import Send

from app.errors import DomainError

Format = Literal["json", "csv"]
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
MEDIA_TYPES: dict[Format, str] = {"json": JSON_TYPE, "csv": CSV_TYPE}
VARY = "Accept, Authorization, X-API-Key"
# Part of every tag: bump it when the bytes of an answer change for the same data and query
# (a new field, another number format), so that no client keeps the old answer as current.
REPRESENTATION_REVISION = 1
try:
    _CODE = f"{metadata.version('tmdb-analytics')}/{REPRESENTATION_REVISION}"
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    _CODE = f"source/{REPRESENTATION_REVISION}"

# One element of an If-None-Match list: an optional weakness flag and the quoted opaque tag
# (etagc per RFC 9110 section 8.8.3; commas may appear inside the quotes).
_ENTITY_TAG = re.compile(r'(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")')


NOT_MODIFIED = Counter(
    "http_not_modified_total",
    "Conditional GETs answered 304, by where: `memo` (before routing, app.conditional) or `route`.",
    ["where"],
)
ANSWERED_BEFORE_ROUTING = Counter(
    "http_answers_before_routing_total",
    "Answers sent before routing, by status: warm GETs and 304s (app.conditional), predictions "
    "and film details (app.predict_early, app.detail_early).",
    ["status"],
)


async def send_json_before_routing(send: Send, payload: bytes) -> None:
    """A 200 `application/json` answer with the bytes a route's `Response` would send, from
    a middleware that answered the request before routing (counted as such)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-length", str(len(payload)).encode("latin-1")),
                (b"content-type", b"application/json"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
    ANSWERED_BEFORE_ROUTING.labels("200").inc()


class NotAcceptableError(DomainError):
    status = 406
    title = "Not Acceptable"


def _media_ranges(accept: str) -> list[tuple[str, str, float]]:
    """(type, subtype, q) of every well-formed range of an Accept header."""
    ranges = []
    for part in accept.split(","):
        media, *params = part.split(";")
        kind, _, sub = media.strip().lower().partition("/")
        if not kind or not sub:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((kind, sub, q))
    return ranges


def _quality(ranges: list[tuple[str, str, float]], media_type: str) -> float:
    """The quality the client gives `media_type`: that of the most specific matching range."""
    kind, _, sub = media_type.partition("/")
    best, specificity = 0.0, -1
    for r_kind, r_sub, q in ranges:
        if r_kind == kind and r_sub == sub:
            rank = 2
        elif r_kind == kind and r_sub == "*":
            rank = 1
        elif r_kind == "*" and r_sub == "*":
            rank = 0
        else:
            continue
        if rank > specificity:
            best, specificity = q, rank
    return best


def negotiate(accept: str | None, requested: Format | None = None) -> Format:
    """The representation to send: `requested` (`?format=`) when given, else the best one
    `accept` allows; raises `NotAcceptableError` when it allows none."""
    if requested is not None:
        return requested
    if accept is None or not accept.strip():
        return "json"
    ranges = _media_ranges(accept)
    if not ranges:
        return "json"  # nothing parseable: as if no Accept was sent (RFC 9110 12.5.1)
    formats: tuple[Format, ...] = ("json", "csv")
    scored = [(_quality(ranges, MEDIA_TYPES[f]), f) for f in formats]
    q, chosen = max(scored, key=lambda s: s[0])  # max keeps the first (JSON) on a tie
    if q <= 0:
        raise NotAcceptableError(
            "this endpoint answers application/json or text/csv (also chosen with "
            "?format=json or ?format=csv)"
        )
    return chosen


def entity_tag(version: int, fmt: str, *key: object) -> str:
    """The strong tag of an answer: data version, representation, and a digest of the code
    revision and `key` (the endpoint and its normalized query; reprs of frozen values)."""
    digest = hashlib.blake2b(repr((_CODE, key)).encode(), digest_size=12).hexdigest()
    return f'"{version}-{fmt}-{digest}"'


def none_match(header: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names `tag` (or `*`) by the weak comparison (RFC 9110
    section 8.8.3.2, which If-None-Match uses): the answer is then 304."""
    if header is None:
        return False
    text = header.strip()
    if text == "*":
        return True
    opaque = tag.removeprefix("W/")  # the weak comparison: weakness flags are ignored
    return any(m.group(1) == opaque for m in _ENTITY_TAG.finditer(text))


def cache_headers(tag: str, max_age: int) -> dict[str, str]:
    return {
        "ETag": tag,
        "Cache-Control": f"private, max-age={max_age}, must-revalidate",
        "Vary": VARY,
    }


def not_modified(headers: dict[str, str]) -> Response:
    """304: no body, no content type; the validators and caching headers of a 200."""
    NOT_MODIFIED.labels("route").inc()
    return Response(status_code=304, headers=headers)


def attachment(name: str) -> str:
    """A Content-Disposition for a download named `name` (letters, digits, `-`, `.` only)."""
    safe = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "answer"
    return f'attachment; filename="{safe}"'
