"""Liveness and readiness probes (public)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.deps import State
from app.errors import problem_responses
from app.services.health import readiness

router = APIRouter(tags=["health"])


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
        503: {"model": Readiness, "description": "A dependency is not ready"},
        **problem_responses(500),
    },
)
async def ready(state: State) -> JSONResponse:
    """Pings the database and reports each dependency; 503 when any is not ready."""
    checks = await readiness(state)
    ok = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ok else "not ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
