"""Service configuration, read once from the environment (and an optional `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "secret", "dev-secret", "please-change-me", "jwt-secret"}
)
DEV_JWT_SECRET = "dev-secret"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app_env: Literal["development", "test", "production"] = "development"
    mongodb_uri: str | None = Field(
        default=None, description="MongoDB URI; unset means the embedded local FerretDB"
    )
    mongodb_db: str = "tmdb"
    mongodb_timeout_ms: int = Field(default=3000, ge=100)
    tmdb_api_token: str | None = None
    tmdb_api_base_url: str = "https://api.themoviedb.org/3"
    tmdb_rate_limit: float = Field(default=40.0, gt=0)
    tmdb_concurrency: int = Field(default=8, ge=1)
    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")
    local_db_dir: Path = Path(".data")
    local_db_port: int = 27018

    jwt_secret: str = DEV_JWT_SECRET
    jwt_expire_minutes: int = Field(default=30, ge=1)
    admin_api_key: str | None = None
    rate_limit_per_minute: int = Field(default=600, ge=1)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    max_batch_size: int = Field(default=1000, ge=1)
    snapshot_check_seconds: float = Field(default=1.0, ge=0)
    # How often each process checks the database for another active model version.
    model_check_seconds: float = Field(default=1.0, gt=0)
    # Where `/v1/movies` runs: `auto` = the database on MongoDB, the analytics snapshot on
    # FerretDB (which cannot use indexes for it).
    movie_search: Literal["auto", "database", "snapshot"] = "auto"
    # Security/operations (issue 5). A verified API key is remembered this long, so a revoked
    # key keeps working for at most this many seconds (0 = look it up on every request).
    api_key_cache_seconds: float = Field(default=10.0, ge=0)
    # 503 when no response has started within this many seconds (0 disables the guard).
    request_timeout_seconds: float = Field(default=30.0, ge=0)
    log_level: str = Field(default="INFO", pattern=r"(?i)^(debug|info|warning|error|critical)$")

    @model_validator(mode="after")
    def _refuse_weak_secrets_in_production(self) -> Settings:
        if self.app_env == "production":
            secret = self.jwt_secret
            if secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
                raise ValueError(
                    "JWT_SECRET must be set to a random value of at least 32 characters "
                    "when APP_ENV=production"
                )
        return self

    @model_validator(mode="after")
    def _refuse_weak_admin_key_in_production(self) -> Settings:
        key = self.admin_api_key
        if self.app_env == "production" and key is not None and len(key) < 32:
            raise ValueError(
                "ADMIN_API_KEY must be a random value of at least 32 characters "
                "(or unset) when APP_ENV=production"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
