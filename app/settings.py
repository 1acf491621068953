"""Service configuration, read once from the environment (and an optional `.env`)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.mongo_uri import hosts, is_local, uri_refuses_tls, uri_requests_tls

MAX_PASSWORD_LENGTH = 1024
# A signing key id: what a token's `kid` header may name.
KID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

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
    # TLS to the database: on when MONGODB_TLS is true, when the URI says `tls=true` (or is
    # `mongodb+srv://`), or when a CA or client certificate file is given. The CA file verifies
    # the server's certificate (default: the system's CAs); the client certificate file (PEM:
    # certificate and private key together) is for servers that require one (x509).
    mongodb_tls: bool = False
    mongodb_tls_ca_file: Path | None = None
    mongodb_tls_cert_key_file: Path | None = None
    mongodb_tls_cert_key_password: SecretStr | None = None
    # APP_ENV=production refuses a MONGODB_URI naming another machine without TLS, unless this
    # says the network between them is trusted (e.g. a private container network).
    mongodb_allow_unencrypted: bool = False
    tmdb_api_token: str | None = None
    tmdb_api_base_url: str = "https://api.themoviedb.org/3"
    tmdb_rate_limit: float = Field(default=40.0, gt=0)
    # Requests in flight, not the rate (the pacer sets that): room for TMDB's slow answers
    # (a 40/s pace with 200 ms answers keeps 8 busy), under its 20 connections per IP.
    tmdb_concurrency: int = Field(default=16, ge=1)
    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")
    local_db_dir: Path = Path(".data")
    local_db_port: int = 27018
    # Backups (`tmdb-analytics backup ...`): where they go, and the key of `--encrypt` (base64
    # of 32 random bytes; checked when a backup command needs it).
    backup_dir: Path = Path("backups")
    backup_key: SecretStr | None = None

    # Unset (or empty): a random key made for this process; see `jwt_secret_is_ephemeral`.
    jwt_secret: str = ""
    # Several signing keys with ids, `kid1:secret1,kid2:secret2` or a JSON object
    # `{"kid1": "secret1", "kid2": "secret2"}` (a bare `secret` in the comma form gets the id
    # derived from its hash, as JWT_SECRET alone does): the first signs, all verify. See
    # `signing_keys`.
    jwt_secrets: str = ""
    jwt_expire_minutes: int = Field(default=30, ge=1)
    # Password policy (issue 13): minimum length, and the age past which a login only lets the
    # user change the password (0 = passwords never expire).
    password_min_length: int = Field(default=12, ge=8, le=MAX_PASSWORD_LENGTH)
    password_max_age_days: int = Field(default=90, ge=0)
    # How long a user's token version is trusted before it is read again: revoking a user's
    # tokens lands within this many seconds (0 = read on every request).
    token_revocation_cache_seconds: float = Field(default=5.0, ge=0)
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
    # Freeze the objects alive after startup out of the garbage collector's full passes
    # (app.heap): they would otherwise stall every request in flight for 0.3-1 s now and then.
    gc_freeze: bool = True
    # Walk tree ensembles with compiled code (numba, built in the background after startup;
    # app.ml.tree_kernel) instead of numpy: the same answers, a big batch's trees in about
    # half the time. Off: numba is never imported.
    compiled_tree_walk: bool = True
    log_level: str = Field(default="INFO", pattern=r"(?i)^(debug|info|warning|error|critical)$")
    # Browser frontends on other origins (issue 11): comma-separated origins allowed to call
    # the API through CORS (`https://app.example.org,http://localhost:5173`), `*` for any;
    # empty (the default) sends no CORS headers at all.
    cors_origins: str = ""
    # `Cache-Control: private, max-age=N, must-revalidate` on analytics and film search: how
    # long a browser may reuse an answer before it revalidates with its ETag (0: always).
    http_cache_seconds: int = Field(default=60, ge=0, le=86_400)

    # Model monitoring (issue 12). Share of predictions written to `prediction_log` (0: none).
    prediction_log_sample: float = Field(default=1.0, ge=0, le=1)
    # Predictions waiting in memory for the log writer; past it they are dropped and counted.
    prediction_log_buffer: int = Field(default=20_000, ge=1)
    # Logged predictions older than this are deleted (hourly, by one process at a time).
    prediction_log_days: float = Field(default=90.0, gt=0)
    # Drift: population stability index thresholds, the two-sample test's significance, the
    # fewest predictions judged, the default window, and how often the gauges are refreshed.
    drift_psi_warn: float = Field(default=0.1, gt=0)
    drift_psi_drift: float = Field(default=0.25, gt=0)
    drift_p_value: float = Field(default=0.01, gt=0, lt=1)
    drift_min_n: int = Field(default=100, ge=1)
    drift_window_days: float = Field(default=7.0, gt=0)
    drift_refresh_seconds: float = Field(default=300.0, ge=0)
    # `monitor check`: live accuracy this much (relative) worse than the card's test figure
    # advises retraining, once at least `monitor_min_outcomes` outcomes are known.
    monitor_accuracy_margin: float = Field(default=0.1, ge=0)
    monitor_min_outcomes: int = Field(default=30, ge=1)
    # MLflow: unset means the store training uses by default (LOCAL_DB_DIR/mlruns/mlflow.db).
    mlflow_tracking_uri: str | None = None
    # How long an activation waits for MLflow's `champion` alias before answering without it.
    mlflow_timeout_seconds: float = Field(default=5.0, gt=0)

    _generated_jwt_secret: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_jwt_secret(self) -> Settings:
        keys = parse_signing_keys(self.jwt_secrets, "") if self.jwt_secrets.strip() else ()
        if keys and self.jwt_secret and self.jwt_secret not in {k.secret for k in keys}:
            raise ValueError(
                "JWT_SECRET is not among JWT_SECRETS: list it there (bare, or under the key id "
                f"{derived_kid(self.jwt_secret)}, so that its tokens keep verifying) or unset it"
            )
        secrets_in_use = [k.secret for k in keys] or [self.jwt_secret]
        placeholder = any(s.strip().lower() in PLACEHOLDER_SECRETS for s in secrets_in_use)
        if self.app_env == "production":
            if placeholder or min(len(s) for s in secrets_in_use) < 32:
                raise ValueError(
                    "JWT_SECRET (and every key of JWT_SECRETS) must be set to a random value "
                    "of at least 32 characters when APP_ENV=production"
                )
        elif not keys and not self.jwt_secret:
            # No published fallback: a deployment that forgets APP_ENV=production must not
            # accept tokens anyone can mint. The price: tokens die with the process.
            self.jwt_secret = self._generated_jwt_secret = secrets.token_urlsafe(48)
        elif placeholder and self.app_env != "test":
            raise ValueError(
                "JWT_SECRET (or a key of JWT_SECRETS) is a published placeholder: set a random "
                "value of at least 32 characters, or unset it for a random key per process"
            )
        return self

    @property
    def mlflow_uri(self) -> str:
        """`MLFLOW_TRACKING_URI`, else the SQLite store training writes by default."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.local_db_dir / 'mlruns' / 'mlflow.db').resolve()}"

    @model_validator(mode="after")
    def _check_drift_thresholds(self) -> Settings:
        if self.drift_psi_drift < self.drift_psi_warn:
            raise ValueError("DRIFT_PSI_DRIFT must be at least DRIFT_PSI_WARN")
        return self

    @property
    def signing_keys(self) -> tuple[SigningKey, ...]:
        """The token signing keys: JWT_SECRETS in order when set (the first signs, every one
        verifies), else JWT_SECRET alone with a key id derived from its hash."""
        return parse_signing_keys(self.jwt_secrets, self.jwt_secret)

    @property
    def cursor_keys(self) -> tuple[bytes, ...]:
        """Sign `/v1/movies` cursors (the first) and check them (any): one per signing key,
        derived from it (so, like tokens, cursors span workers, and a cursor signed before a
        signing-key rotation keeps working while its key is listed), under its own label so
        that a cursor signature can never pass for a token signature."""
        return tuple(cursor_key_of(k.secret) for k in self.signing_keys)

    @property
    def cursor_key(self) -> bytes:
        """The key that signs new `/v1/movies` cursors."""
        return self.cursor_keys[0]

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
        return not self.jwt_secrets.strip() and self.jwt_secret == self._generated_jwt_secret

    @field_validator("admin_api_key", "tmdb_api_token", "backup_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `ADMIN_API_KEY=` (as `${ADMIN_API_KEY:-}` in a compose file leaves it) means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_weak_admin_key_in_production(self) -> Settings:
        key = self.admin_api_key
        if self.app_env == "production" and key is not None and len(key) < 32:
            raise ValueError(
                "ADMIN_API_KEY must be a random value of at least 32 characters "
                "(or unset) when APP_ENV=production"
            )
        return self

    @property
    def mongodb_tls_enabled(self) -> bool:
        """Whether the client connects to the database over TLS."""
        uri = self.mongodb_uri or ""
        return (
            self.mongodb_tls
            or self.mongodb_tls_ca_file is not None
            or self.mongodb_tls_cert_key_file is not None
            or uri_requests_tls(uri)
        )

    @model_validator(mode="after")
    def _check_database_tls(self) -> Settings:
        for name in ("mongodb_tls_ca_file", "mongodb_tls_cert_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name.upper()}: {path} is not a readable file")
        uri = self.mongodb_uri
        if not uri:
            return self  # the embedded local database
        tls_settings = (
            self.mongodb_tls or self.mongodb_tls_ca_file or self.mongodb_tls_cert_key_file
        )
        if uri_refuses_tls(uri) and tls_settings:
            raise ValueError(
                "MONGODB_URI says tls=false but MONGODB_TLS / MONGODB_TLS_* ask for TLS: "
                "remove one of them"
            )
        if (
            self.app_env == "production"
            and not is_local(uri)
            and not (self.mongodb_tls_enabled and not uri_refuses_tls(uri))
            and not self.mongodb_allow_unencrypted
        ):
            raise ValueError(
                f"MONGODB_URI names another machine ({', '.join(hosts(uri))}) without TLS: "
                "with APP_ENV=production, passwords and data would cross the network in "
                "clear. Add tls=true to the URI (with MONGODB_TLS_CA_FILE for a private CA), "
                "or, only where the network itself is private (a container network), set "
                "MONGODB_ALLOW_UNENCRYPTED=true"
            )
        return self


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A token signing key and its id (the `kid` header of the tokens it signs)."""

    kid: str
    secret: str = field(repr=False)


def derived_kid(secret: str) -> str:
    """The key id of a secret given without one: a prefix of its SHA-256 (public, and says
    nothing usable about the secret)."""
    return "k" + hashlib.sha256(secret.encode()).hexdigest()[:11]


@lru_cache(maxsize=32)
def parse_signing_keys(jwt_secrets: str, jwt_secret: str) -> tuple[SigningKey, ...]:
    """`kid1:secret1,kid2:secret2` (an entry without `kid:` gets `derived_kid`) or the JSON
    object `{"kid1": "secret1", ...}` (for secrets holding `,` or `:`) when `jwt_secrets` is
    set, in order; else `jwt_secret` alone. Raises ValueError on a malformed list."""
    if not jwt_secrets.strip():
        return (SigningKey(derived_kid(jwt_secret), jwt_secret),)
    malformed = ValueError(
        "JWT_SECRETS: each entry is `kid:secret` (kid: 1-64 of A-Z a-z 0-9 _ . -) or a bare "
        'secret, separated by commas; or a JSON object {"kid": "secret", ...}'
    )
    pairs: list[tuple[str, str]] = []
    if jwt_secrets.lstrip().startswith("{"):
        try:
            loaded = json.loads(jwt_secrets)
        except ValueError:
            raise malformed from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise malformed
        pairs = list(loaded.items())
    else:
        for entry in jwt_secrets.split(","):
            entry = entry.strip()
            if not entry:
                continue
            kid, sep, secret = entry.partition(":")
            pairs.append((kid, secret) if sep else (derived_kid(entry), entry))
    keys: list[SigningKey] = []
    for kid, secret in pairs:
        if not KID_RE.match(kid) or not secret:
            raise malformed
        keys.append(SigningKey(kid, secret))
    if not keys:
        raise ValueError("JWT_SECRETS lists no key")
    if len({k.kid for k in keys}) != len(keys):
        raise ValueError("JWT_SECRETS: key ids must be unique")
    return tuple(keys)


def cursor_key_of(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"movie-cursor-v1", hashlib.sha256).digest()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
