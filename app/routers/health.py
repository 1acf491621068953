"""Liveness and readiness probes (public)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.deps import State
from app.errors import problem_responses
from app.problems import PROBLEM_JSON, problem_body
from app.routers.json_body import json_router
from app.security import is_admin
from app.services.health import public_check, readiness

router = json_router(tags=["health"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(examples=["ready"])
    checks: dict[str, str] = Field(examples=[{"database": "ok", "models": "ok"}])


@router.get("/health", summary="Liveness", response_model=Health)
async def health() -> Health:
    """Answers while the process runs; touches nothing else."""
    return Health(status="ok")


@router.get(
    "/ready",
    summary="Readiness",
    response_model=Readiness,
    responses={
        503: {
            "description": "A dependency is not ready: problem+json with `checks`",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
        **problem_responses(500),
    },
)
async def ready(request: Request, state: State) -> JSONResponse:
    """Pings the database and reports each dependency; 503 when any is not ready. Each check
    says `ok`, `unavailable` or `not ready`; with an admin credential, also why."""
    checks = await readiness(state.readiness_checks)
    if not await is_admin(request, state):
        checks = {name: public_check(answer) for name, answer in checks.items()}
    if all(v == "ok" for v in checks.values()):
        return JSONResponse(Readiness(status="ready", checks=checks).model_dump())
    failing = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    # Problem details (the one error shape) extended with the per-dependency checks.
    body = problem_body(503, f"not ready ({failing})", status_text="not ready", checks=checks)
    return JSONResponse(
        body, status_code=503, media_type=PROBLEM_JSON, headers={"Retry-After": "5"}
    )
