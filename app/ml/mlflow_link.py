"""MLflow as the record of what serves: the registered model's `champion` alias names the version
that serves (with who made it so and when), and a version's run receives its live metrics.

Shared by training (which sets the alias when it activates what it trained) and by the service
and its commands (activation, rollback, `tmdb-analytics monitor report`). Every call blocks and
may fail in any way MLflow can: callers run it off the event loop and treat a failure as
"MLflow did not follow", never as a failure of serving. MLflow is imported on first use; the
runtime image does not install it (the `train` extra does), which callers report as such.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CHAMPION = "champion"
REGISTERED_PREFIX = "tmdb-analytics-"


class MlflowUnavailableError(Exception):
    """MLflow is not installed here, or its tracking store did not answer."""


def registered_name(model: str) -> str:
    return REGISTERED_PREFIX + model


def fail_fast(timeout_seconds: float) -> None:
    """Make MLflow's REST client give up within about `timeout_seconds` rather than retry for
    minutes (its defaults), unless the operator set these variables."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(timeout_seconds))))


def _client(tracking_uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise MlflowUnavailableError(
            "mlflow is not installed in this environment (install the train extra)"
        ) from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def set_champion(
    tracking_uri: str,
    registered_model: str,
    registered_version: str,
    by: str,
    at: datetime | None = None,
) -> None:
    """Point `champion` at the version, and record who did it and when on both the version
    and the registered model (the model's tags say who moved the alias last)."""
    client = _client(tracking_uri)
    when = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.set_registered_model_alias(registered_model, CHAMPION, registered_version)
    for key, value in (("champion_by", by), ("champion_at", when)):
        client.set_model_version_tag(registered_model, registered_version, key, value)
        client.set_registered_model_tag(registered_model, key, value)
    client.set_registered_model_tag(registered_model, "champion_version", registered_version)


def champion(tracking_uri: str, registered_model: str) -> str | None:
    """The registered version `champion` names, if any."""
    client = _client(tracking_uri)
    try:
        return str(client.get_model_version_by_alias(registered_model, CHAMPION).version)
    except Exception as exc:  # MLflow raises its own RestException for an unknown alias
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(
            exc
        ):
            return None
        raise


def log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float]) -> None:
    """Add one point to each metric's history in the run (step: unix time in seconds, so the
    run's charts read as time)."""
    if not metrics:
        return
    client = _client(tracking_uri)
    from mlflow.entities import Metric

    now = time.time()
    client.log_batch(
        run_id,
        metrics=[
            Metric(key=k, value=float(v), timestamp=int(now * 1000), step=int(now))
            for k, v in metrics.items()
        ],
    )
