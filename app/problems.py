"""The one error shape: RFC 9457 problem details (`application/problem+json`).

Every error body is built here, whether by an exception handler (`app.errors`), by raw ASGI
middleware before any routing (`app.observability.send_problem`), or by `/ready`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, Field

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str | None = Field(default=None, examples=["movie 42 not found"])
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field validation errors (422 only)"
    )
    request_id: str | None = None


def problem_body(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    instance: str | None = None,
    request_id: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """A problem document as a plain dict (unset members left out); `extensions` adds
    members of its own, as RFC 9457 allows (e.g. `/ready`'s `checks`)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    optional = {
        "detail": detail,
        "instance": instance,
        "errors": errors,
        "request_id": request_id,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    body.update(extensions)
    return body
