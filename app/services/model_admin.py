"""Model management behind `/v1/models/*`: what serves, its card, reload and activation
(every reload, activation and rollback audited, refused ones too)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.errors import DomainError, NotFoundError, UnavailableError
from app.ml import artifacts
from app.ml.monitoring import MONITORED_FEATURES
from app.ml.registry import ArtifactError, LoadedModel, ModelRegistry
from app.models.monitoring import DriftSummary
from app.models.predict import (
    ActivationInfo,
    ActivationResult,
    ModelDetail,
    ModelList,
    ModelSummary,
)
from app.services import audit
from app.services.audit import Origin
from app.services.mlflow_sync import ChampionSync
from app.services.model_versions import ActiveRecord

# Where an activation is audited: the database and who acts from where.
AuditTo = tuple[AsyncDatabase[Document], Origin]


class ArtifactRejectedError(DomainError):
    status = 409
    title = "Artifact rejected"


def serving_model(registry: ModelRegistry, name: str) -> LoadedModel:
    """The version serving `name` now (503 when none can), taken once per request."""
    model = registry.get(name)
    if model is None:
        reason = registry.problem(name) or "not loaded"
        raise UnavailableError(
            f"model {name} is unavailable: {reason}", headers={"Retry-After": "30"}
        )
    return model


def known_model(name: str) -> None:
    """404 for a name that is no model."""
    if name not in artifacts.MODEL_NAMES:
        raise NotFoundError(f"no model {name!r}; models: {', '.join(artifacts.MODEL_NAMES)}")


def list_models(
    registry: ModelRegistry,
    *,
    internals: bool = False,
    drift: Callable[[str], DriftSummary | None] | None = None,
) -> ModelList:
    reg = registry
    out = []
    for name in reg.names:
        model = reg.get(name)
        if model is None:
            out.append(
                ModelSummary(
                    name=name,
                    status="unavailable",
                    versions=reg.versions(name),
                    problem=reg.problem(name) or "not loaded",
                )
            )
            continue
        out.append(
            ModelSummary(
                name=model.card.name,
                status="serving",
                active_version=model.version,
                family=model.card.family,
                created_at=model.card.created_at.isoformat(),
                metrics=model.card.metrics,
                versions=reg.versions(name),
                problem=reg.behind(name, reason=internals),
                drift=drift(name) if drift is not None else None,
            )
        )
    return ModelList(models=out)


def model_detail(
    registry: ModelRegistry,
    name: str,
    *,
    internals: bool = False,
    prediction_log: Mapping[str, Any] | None = None,
) -> ModelDetail:
    """The model's detail; `internals` (admins) adds what the card keeps from others."""
    known_model(name)
    reg = registry
    model = serving_model(reg, name)
    reference = {
        n: float(v)
        for n, v in zip(model.features.feature_names_, model.features.reference_, strict=True)
        if n in MONITORED_FEATURES
    }
    return ModelDetail(
        name=model.card.name,
        active_version=model.version,
        loaded_at=model.loaded_at.isoformat(),
        fast_path=model.fast_scorer is not None,
        versions=reg.versions(name),
        activation=_activation(reg.record(name)),
        problem=reg.behind(name, reason=internals),
        card=model.card if internals else model.card.without_internals(),
        monitoring=reg.monitor.snapshot(name, reference),
        prediction_log=dict(prediction_log) if prediction_log is not None else None,
    )


def _activation(record: ActiveRecord | None) -> ActivationInfo | None:
    if record is None:
        return None
    return ActivationInfo(
        version=record.version,
        activated_by=record.activated_by,
        activated_at=record.activated_at.isoformat(),
        source=record.source,
    )


async def reload_model(
    registry: ModelRegistry,
    name: str,
    by: str,
    audit_to: AuditTo,
    champion: ChampionSync | None = None,
) -> ActivationResult:
    """Serve the version `ACTIVE` names (audited as `model.reload`); MLflow's `champion`
    alias follows."""
    db, origin = audit_to
    try:
        known_model(name)
        result = await _switch(registry, name, lambda: registry.reload(name, by), champion, by)
    except DomainError as exc:
        _record(db, origin, "model.reload", name, outcome="failure", reason=exc.detail)
        raise
    _record(db, origin, "model.reload", name, result=result)
    return result


async def activate_model(
    registry: ModelRegistry,
    name: str,
    version: str,
    by: str,
    audit_to: AuditTo,
    champion: ChampionSync | None = None,
) -> ActivationResult:
    """Serve `version` (MLflow's `champion` alias follows). Audited as `model.rollback` when
    it is older than the version serving (versions are UTC timestamps, so older sorts first),
    else as `model.activate`."""
    db, origin = audit_to
    serving = registry.get(name)
    action = (
        "model.rollback" if serving is not None and version < serving.version else "model.activate"
    )
    try:
        known_model(name)
        if version not in registry.versions(name):
            raise NotFoundError(f"model {name} has no version {version}")
        result = await _switch(
            registry, name, lambda: registry.activate(name, version, by), champion, by
        )
    except DomainError as exc:
        _record(db, origin, action, name, outcome="failure", reason=exc.detail, version=version)
        raise
    _record(db, origin, action, name, result=result)
    return result


def _record(
    db: AsyncDatabase[Document],
    origin: Origin,
    action: str,
    name: str,
    *,
    outcome: audit.Outcome = "success",
    result: ActivationResult | None = None,
    reason: str | None = None,
    version: str | None = None,
) -> None:
    details: dict[str, str | None] = {}
    if result is not None:
        details = {"version": result.active_version, "previous_version": result.previous_version}
    else:
        details = {"version": version, "reason": reason}
    audit.record_as(db, origin, action, outcome=outcome, target=name, details=details)


async def _switch(
    registry: ModelRegistry,
    name: str,
    load: Callable[[], Awaitable[LoadedModel]],
    champion: ChampionSync | None,
    by: str,
) -> ActivationResult:
    """Serve what `load` loads; a rejected artifact leaves the serving version as it was.
    Then MLflow's `champion` follows (never undoing the switch when it cannot)."""
    previous = registry.get(name)
    try:
        model = await load()
    except ArtifactError as exc:
        raise ArtifactRejectedError(f"{exc}; still serving {_serving(previous)}") from None
    return ActivationResult(
        name=model.card.name,
        active_version=model.version,
        previous_version=previous.version if previous else None,
        mlflow=await champion.follow(model.card, by) if champion is not None else None,
    )


def _serving(model: LoadedModel | None) -> str:
    return model.version if model is not None else "nothing"
