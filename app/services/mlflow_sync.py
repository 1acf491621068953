"""MLflow follows what serves: after an activation, rollback or reload answered by this process,
the registered model's `champion` alias moves to the version now serving (who and when as
tags; `app.ml.mlflow_link`).

MLflow is a record, not a dependency of serving: the switch has happened before MLflow is
asked, the answer waits for it at most `MLFLOW_TIMEOUT_SECONDS` (then says `pending`), and an
MLflow that is unreachable, refuses, or is not installed gives `failed` with the reason, in
the answer and the log. Calls run in a worker thread, one at a time per model, and a call
that a newer switch has overtaken does nothing, so the alias ends on the last version served.

The store: `MLFLOW_TRACKING_URI` when set, else the one the version was registered in (its
card's `mlflow.tracking_uri`). A version trained with `--no-mlflow` is `skipped`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime

from app.ml import mlflow_link
from app.ml.card import ModelCard
from app.models.monitoring import MlflowSync
from app.settings import Settings

log = logging.getLogger("app.services.mlflow_sync")


def tracking_uri(settings: Settings, card: ModelCard) -> str | None:
    """Where the version's MLflow record lives."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    return card.mlflow.tracking_uri if card.mlflow is not None else None


class ChampionSync:
    """Moves `champion` after switches made by this process (built once per app)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._locks: dict[str, threading.Lock] = {}
        self._wanted: dict[str, int] = {}  # model -> sequence number of the latest switch
        mlflow_link.fail_fast(settings.mlflow_timeout_seconds)

    async def follow(self, card: ModelCard, by: str) -> MlflowSync:
        info = card.mlflow
        if info is None or not info.registered_model or not info.registered_version:
            return MlflowSync(status="skipped", detail="this version is not registered in MLflow")
        uri = tracking_uri(self._settings, card)
        if uri is None:
            return MlflowSync(status="skipped", detail="no MLflow tracking URI is known")
        sync = MlflowSync(
            status="pending",
            registered_model=info.registered_model,
            registered_version=info.registered_version,
        )
        seq = self._wanted.get(card.name, 0) + 1
        self._wanted[card.name] = seq
        at = datetime.now(UTC)
        work = asyncio.ensure_future(
            asyncio.to_thread(
                self._set,
                card.name,
                seq,
                uri,
                info.registered_model,
                info.registered_version,
                by,
                at,
            )
        )
        try:
            # Shielded: a slow MLflow keeps going after the answer leaves (and logs the end).
            detail = await asyncio.wait_for(
                asyncio.shield(work), self._settings.mlflow_timeout_seconds
            )
        except TimeoutError:
            return sync.model_copy(update={"detail": "MLflow has not answered yet"})
        except Exception as exc:
            return sync.model_copy(update={"status": "failed", "detail": _reason(exc)})
        return sync.model_copy(update={"status": "set", "detail": detail})

    def _set(
        self,
        name: str,
        seq: int,
        uri: str,
        registered_model: str,
        registered_version: str,
        by: str,
        at: datetime,
    ) -> str | None:
        lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if self._wanted.get(name) != seq:
                return "overtaken by a later switch"
            try:
                mlflow_link.set_champion(uri, registered_model, registered_version, by, at)
            except Exception as exc:
                log.warning(
                    "MLflow: %s alias %s -> %s not set: %s",
                    registered_model,
                    mlflow_link.CHAMPION,
                    registered_version,
                    _reason(exc),
                )
                raise
        log.info(
            "MLflow: %s alias %s -> version %s (by %s)",
            registered_model,
            mlflow_link.CHAMPION,
            registered_version,
            by,
        )
        return None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    first = text[0][:300] if text else ""
    return f"{exc.__class__.__name__}: {first}" if first else exc.__class__.__name__
