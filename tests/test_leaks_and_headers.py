"""What responses must not give away, and the headers every client should get: no MLflow
tracking URI for viewers, no caching of tokens, `nosniff` everywhere, and a public `/ready`
that names each check's status but no paths or exception names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.localdb import free_port
from app.ml.artifacts import CARD_FILE, read_active
from app.security import Role, issue_token
from app.services import credentials
from app.settings import Settings
from tests.security_support import (
    ADMIN_KEY,
    api_key,
    bearer,
    make_app,
    security_settings,
    serve,
)

PASSWORD = "correct horse battery staple"
SECRET_URI = "https://mlflow-user:s3cr3t-pass@mlflow.internal.example/"


async def test_every_response_says_nosniff(settings: Settings) -> None:
    async with serve(make_app(security_settings(settings, rate_limit_per_minute=3))) as api:
        responses = [
            await api.get("/health"),
            await api.get("/openapi.json"),
            await api.get("/v1/auth/me"),  # 401 from a dependency
            await api.get("/no-such-route"),  # 404
            await api.get("/docs"),
            await api.get("/v1/auth/me"),  # 429 from the middleware, before any routing
            await api.get("/metrics"),
        ]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 429, 429, 200]
    for response in responses:
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], response.url


async def test_token_response_is_never_cached(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await credentials.create_user(db, "carol", Role.viewer, PASSWORD)
    async with serve(make_app(security_settings(settings))) as api:
        response = await api.post(
            "/v1/auth/token", data={"username": "carol", "password": PASSWORD}
        )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_public_ready_names_statuses_but_no_details(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    """Without trained models /ready is 503, and the models check's detail names the
    artifacts directory: only an admin credential sees that."""
    _, viewer_key = await credentials.create_api_key(db, "viewer", Role.viewer)
    artifacts = str(settings.artifacts_dir)
    async with serve(make_app(security_settings(settings))) as api:
        public = await api.get("/ready")
        as_viewer = await api.get("/ready", headers=api_key(viewer_key))
        bogus = await api.get("/ready", headers={"Authorization": "Bearer junk"})
        as_admin = await api.get("/ready", headers=api_key(ADMIN_KEY))
    for response in (public, as_viewer, bogus):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["checks"] == {"database": "ok", "models": "not ready", "analytics": "ok"}
        assert artifacts not in response.text and "revenue" not in response.text
    assert as_admin.status_code == 503
    admin_models = as_admin.json()["checks"]["models"]
    assert admin_models.startswith("not ready: ") and artifacts in admin_models


async def test_public_ready_hides_exception_names(settings: Settings) -> None:
    dead = security_settings(
        settings, mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/", mongodb_timeout_ms=300
    )
    async with serve(make_app(dead)) as api:
        public = await api.get("/ready")
        as_admin = await api.get("/ready", headers=api_key(ADMIN_KEY))
    assert public.status_code == 503 and public.json()["checks"]["database"] == "unavailable"
    assert "Error" not in public.text and "Timeout" not in public.text
    assert as_admin.json()["checks"]["database"].startswith("unavailable: ")
    assert "Error" in as_admin.json()["checks"]["database"]


@pytest.fixture
def artifacts_with_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained artifacts whose active revenue card records an MLflow run tracked at a URI
    holding credentials."""
    from tests.ml_support import copy_artifacts

    root = copy_artifacts(tmp_path_factory)
    version = read_active(root, "revenue")
    assert version is not None
    card_path = root / "revenue" / version / CARD_FILE
    card = json.loads(card_path.read_text())
    card["mlflow"] = {"tracking_uri": SECRET_URI, "experiment": "tmdb", "run_id": "abc123"}
    card_path.write_text(json.dumps(card))
    return root


async def test_model_card_shows_the_tracking_uri_to_admins_only(
    settings: Settings, db: AsyncDatabase[Document], artifacts_with_mlflow: Path
) -> None:
    app_settings = security_settings(settings, artifacts_dir=artifacts_with_mlflow)
    vic = await credentials.create_user(db, "vic", Role.viewer, PASSWORD)
    pat = await credentials.create_user(db, "pat", Role.predictor, PASSWORD)
    viewer_token, _ = issue_token(app_settings, "vic", Role.viewer, version=vic.token_version)
    predictor_token, _ = issue_token(app_settings, "pat", Role.predictor, version=pat.token_version)
    async with serve(make_app(app_settings)) as api:
        for headers in (bearer(viewer_token), bearer(predictor_token)):
            response = await api.get("/v1/models/revenue", headers=headers)
            assert response.status_code == 200, response.text
            mlflow = response.json()["card"]["mlflow"]
            assert mlflow["tracking_uri"] is None and mlflow["run_id"] == "abc123"
            assert "s3cr3t" not in response.text and "mlflow.internal" not in response.text
        as_admin = await api.get("/v1/models/revenue", headers=api_key(ADMIN_KEY))
        assert as_admin.json()["card"]["mlflow"]["tracking_uri"] == SECRET_URI


async def test_ready_never_refuses_but_charges_failed_credentials(settings: Settings) -> None:
    """A probe never gets 401 or 429 from /ready, whatever it sends; yet guessing keys there
    spends the address's budget like anywhere else."""
    async with serve(make_app(security_settings(settings, rate_limit_per_minute=2))) as api:
        for i in range(6):
            response = await api.get("/ready", headers=api_key(f"guess-{i}"))
            assert response.status_code in (200, 503)
            assert response.json()["checks"]["database"] == "ok"
        assert (await api.get("/openapi.json")).status_code == 429
