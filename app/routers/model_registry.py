"""Model listing and cards (public), reload and activation (admin)."""

from __future__ import annotations

from app.deps import Db, State
from app.errors import problem_responses
from app.models.predict import ActivateRequest, ActivationResult, ModelDetail, ModelList
from app.routers.json_body import json_router
from app.security import CurrentPrincipal, RequestOrigin, Role
from app.services import model_admin as service

router = json_router(prefix="/v1/models", tags=["models"])
# Included separately by the app factory, which attaches the admin credentials dependency.
admin_router = json_router(prefix="/v1/models", tags=["models (admin)"])


@router.get(
    "",
    summary="List models",
    response_model=ModelList,
    responses=problem_responses(500, 503),
)
async def list_models(state: State, principal: CurrentPrincipal) -> ModelList:
    """Each model with its active version, test metrics and drift status, or why it is
    unavailable."""
    internals = principal.role.includes(Role.admin)  # load errors may name paths
    return service.list_models(state.registry, internals=internals, drift=state.drift.summary)


@router.get(
    "/{name}",
    summary="Model card",
    response_model=ModelDetail,
    responses=problem_responses(404, 500, 503),
)
async def get_model(name: str, state: State, principal: CurrentPrincipal) -> ModelDetail:
    """The active version's card, its versions on disk, live prediction monitoring, and this
    process's prediction log writer."""
    internals = principal.role.includes(Role.admin)  # e.g. the MLflow tracking URI
    return service.model_detail(
        state.registry,
        name,
        internals=internals,
        prediction_log=state.prediction_log.stats(name),
    )


@admin_router.post(
    "/{name}/reload",
    summary="Reload the active version",
    response_model=ActivationResult,
    responses=problem_responses(404, 409, 500, 503),
)
async def reload_model(
    name: str, state: State, principal: CurrentPrincipal, db: Db, origin: RequestOrigin
) -> ActivationResult:
    """Serve the version `ACTIVE` names in every process; a bad artifact is refused (409).
    MLflow's `champion` alias follows."""
    return await service.reload_model(
        state.registry, name, str(principal), (db, origin), state.champion
    )


@admin_router.post(
    "/{name}/activate",
    summary="Activate a version (roll out or roll back)",
    response_model=ActivationResult,
    responses=problem_responses(404, 409, 422, 500, 503),
)
async def activate_model(
    name: str,
    body: ActivateRequest,
    state: State,
    principal: CurrentPrincipal,
    db: Db,
    origin: RequestOrigin,
) -> ActivationResult:
    """Serve the given version in every process; a bad artifact is refused (409). MLflow's
    `champion` alias follows."""
    return await service.activate_model(
        state.registry, name, body.version, str(principal), (db, origin), state.champion
    )
