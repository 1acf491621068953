"""Domain errors and the one error shape: RFC 9457 `application/problem+json`."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, PyMongoError, ServerSelectionTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.observability import DB_ERRORS
from app.problems import PROBLEM_JSON, Problem, problem_body

log = logging.getLogger("app.errors")
CANDIDATE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class DomainError(Exception):
    """Raised by services; mapped to a problem response by the app."""

    status = 400
    title = "Bad Request"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.errors = errors  # per-field problems, shown as the problem's `errors`


class NotFoundError(DomainError):
    status = 404
    title = "Not Found"


class InvalidQueryError(DomainError):
    status = 400
    title = "Invalid query"


class ConflictError(DomainError):
    status = 409
    title = "Conflict"


class UnavailableError(DomainError):
    status = 503
    title = "Service Unavailable"


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    request: Request | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    body = problem_body(
        status,
        detail,
        title=title,
        instance=request.url.path if request is not None else None,
        errors=errors,
        request_id=request_id,
    )
    return JSONResponse(
        body,
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json errors."""
    return {
        s: {
            "description": HTTPStatus(s).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


def add_problem_schema(app: FastAPI) -> None:
    """Register `Problem` in the OpenAPI components and document it for 422s too."""
    builtin = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = builtin()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for item in spec.get("paths", {}).values():
            for op in item.values():
                responses = op.get("responses", {})
                if "422" in responses:
                    responses["422"] = {
                        "description": "Validation error: `errors` names each invalid field",
                        "content": {
                            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                        },
                    }
                if "requestBody" in op and "400" not in responses:
                    # FastAPI answers 400 to a body it cannot even decode (broken JSON or
                    # encoding) before any validation runs; say so wherever a body is taken.
                    responses["400"] = {
                        "description": "The request body could not be parsed",
                        "content": {
                            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                        },
                    }
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        reason = (err.get("ctx") or {}).get("error")
        if err.get("type") == "json_invalid" and reason:
            # FastAPI puts the parser's character offset where a field name goes ("body.0")
            # and keeps the parser's reason in `ctx`: say both in words.
            where = list(err.get("loc", ()))[1:2]
            at = f" at character {where[0]}" if where else ""
            out.append(
                {"loc": ["body"], "msg": f"invalid JSON{at}: {reason}", "type": "json_invalid"}
            )
            continue
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def _allowed_methods(request: Request) -> list[str]:
    # Asked route by route through the public `matches`, one method at a time: included
    # routers are not flattened into `app.routes` in this FastAPI.
    allowed = []
    for method in CANDIDATE_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
            if method == "GET":
                allowed.append("HEAD")  # every GET answers HEAD too (app.head_requests)
    return list(dict.fromkeys(allowed))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem_response(
            exc.status,
            exc.detail,
            title=exc.title,
            request=request,
            headers=exc.headers,
            errors=exc.errors,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _jsonable_errors(exc)
        fields = ", ".join(".".join(e["loc"]) for e in errors[:5])
        return problem_response(
            422,
            f"invalid request: {fields}",
            title="Unprocessable Content",
            request=request,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; a path
            # served by several routes (GET and POST /v1/dashboards) allows all of theirs.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem_response(
            exc.status_code,
            str(exc.detail) if exc.detail else None,
            request=request,
            headers=headers or None,
        )

    @app.exception_handler(ConnectionFailure)
    @app.exception_handler(ServerSelectionTimeoutError)
    async def _db_down(request: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        DB_ERRORS.labels(exc.__class__.__name__).inc()
        return problem_response(
            503,
            "the database is unavailable; retry shortly",
            request=request,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal error; quote the request id", request=request)
