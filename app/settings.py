"""Service configuration, read once from the environment (and an optional `.env`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values printed in docs and examples: anyone can mint tokens signed with them. Refused as
# JWT_SECRET everywhere but APP_ENV=test.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "changeit",
        "secret",
        "dev-secret",
        "please-change-me",
        "jwt-secret",
        "your-secret-key",
        "supersecret",
    }
)


# scheme://host[:port], the host a name or an IPv4 or bracketed IPv6 address.
_ORIGIN_RE = re.compile(r"^https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


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

    # Unset (or empty): a random key made for this process; see `jwt_secret_is_ephemeral`.
    jwt_secret: str = ""
    jwt_expire_minutes: int = Field(default=30, ge=1)
    admin_api_key: str | None = None
    rate_limit_per_minute: int = Field(default=600, ge=1)
    # Password guessing: failed logins allowed per client address and per username (a burst of
    # this size, refilled over a minute); past it, 429 without even checking the password.
    login_ip_failures_per_minute: int = Field(default=10, ge=1)
    login_user_failures_per_minute: int = Field(default=10, ge=1)
    # Argon2 runs in this many dedicated threads (never the default executor, which analytics
    # and model loading need); logins waiting beyond `login_hash_queue` get 503 at once.
    login_hash_threads: int = Field(default=2, ge=1)
    login_hash_queue: int = Field(default=32, ge=0)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    max_batch_size: int = Field(default=1000, ge=1)
    snapshot_check_seconds: float = Field(default=1.0, ge=0)
    # The analytics snapshot on disk (issue 15): loaded at start instead of reading every
    # film, refreshed from the films change log. Unset dir: LOCAL_DB_DIR/snapshots.
    snapshot_persist: bool = True
    snapshot_dir: Path | None = None
    # A snapshot caught up from the change log is saved at most this often (a full read is
    # saved at once); a restart catches up from the log whatever it missed.
    snapshot_persist_seconds: float = Field(default=60.0, ge=0)
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
    # Browser frontends on other origins (issue 11): comma-separated origins allowed to call
    # the API through CORS (`https://app.example.org,http://localhost:5173`), `*` for any;
    # empty (the default) sends no CORS headers at all.
    cors_origins: str = ""
    # `Cache-Control: private, max-age=N, must-revalidate` on analytics and film search: how
    # long a browser may reuse an answer before it revalidates with its ETag (0: always).
    http_cache_seconds: int = Field(default=60, ge=0, le=86_400)

    _generated_jwt_secret: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_jwt_secret(self) -> Settings:
        secret = self.jwt_secret
        placeholder = secret.strip().lower() in PLACEHOLDER_SECRETS
        if self.app_env == "production":
            if placeholder or len(secret) < 32:
                raise ValueError(
                    "JWT_SECRET must be set to a random value of at least 32 characters "
                    "when APP_ENV=production"
                )
        elif not secret:
            # No published fallback: a deployment that forgets APP_ENV=production must not
            # accept tokens anyone can mint. The price: tokens die with the process.
            self.jwt_secret = self._generated_jwt_secret = secrets.token_urlsafe(48)
        elif placeholder and self.app_env != "test":
            raise ValueError(
                "JWT_SECRET is a published placeholder: set a random value of at least 32 "
                "characters, or unset it for a random key per process"
            )
        return self

    @property
    def cursor_key(self) -> bytes:
        """Signs `/v1/movies` cursors. Derived from JWT_SECRET (so, like tokens, cursors span
        workers when JWT_SECRET is set), under its own label so that a cursor signature can
        never pass for a token signature."""
        return hmac.new(self.jwt_secret.encode(), b"movie-cursor-v1", hashlib.sha256).digest()

    @property
    def cors_origin_list(self) -> list[str]:
        """`CORS_ORIGINS` as a list of origins (see `_check_cors_origins`)."""
        parts = (p.strip().rstrip("/").lower() for p in self.cors_origins.split(","))
        return [p for p in parts if p]

    @model_validator(mode="after")
    def _check_cors_origins(self) -> Settings:
        # A browser sends `Origin: scheme://host[:port]`, nothing more: a path or a missing
        # scheme would never match, so a typo is refused here rather than failing silently.
        for origin in self.cors_origin_list:
            if origin != "*" and not _ORIGIN_RE.match(origin):
                raise ValueError(
                    f"CORS_ORIGINS: {origin!r} is not an origin; give scheme://host[:port] "
                    "(e.g. https://app.example.org), comma-separated, or *"
                )
        return self

    @property
    def snapshot_store_dir(self) -> Path | None:
        """Where the analytics snapshot is persisted (None: it is not)."""
        if not self.snapshot_persist:
            return None
        return self.snapshot_dir or self.local_db_dir / "snapshots"

    @property
    def jwt_secret_is_ephemeral(self) -> bool:
        """Whether the signing key was made up for this process (JWT_SECRET unset)."""
        return self.jwt_secret == self._generated_jwt_secret

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
