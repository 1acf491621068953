"""docker-compose.yml, read as data (Docker is not available to the suite): MongoDB with
authentication and an init script that gives the service a readWrite-only user, a one-shot
loader that the service waits for, the service healthy only when /ready is ok, root
credentials nowhere but in the mongo container, and the service's settings as compose sets
them accepted by the production checks."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.support import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ROOT_VARS = ("MONGO_INITDB_ROOT_USERNAME", "MONGO_INITDB_ROOT_PASSWORD", "MONGO_ROOT_PASSWORD")
# What a user would export (the compose file says which are required).
SHELL = {
    "MONGO_ROOT_PASSWORD": "root-secret-9f2c",
    "MONGO_APP_PASSWORD": "app-secret-4be1",
    "JWT_SECRET": "compose-test-jwt-secret-0123456789abcdef",
}
_VAR = re.compile(r"\$\{(?P<name>[A-Z_]+)(?:(?P<op>:\?|:-)(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def interpolate(value: str, shell: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (and `$$` for a `$`)."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if shell.get(name):
            return shell[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {arg}")
        return arg if op == ":-" else ""

    return _VAR.sub(one, value).replace("$$", "$")


def env(service: dict[str, Any], shell: dict[str, str] = SHELL) -> dict[str, str]:
    return {k: interpolate(str(v), shell) for k, v in service.get("environment", {}).items()}


def test_the_services_start_in_order_and_the_service_is_healthy_only_when_ready(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert {"mongo", "loader", "api"} <= set(services)
    mongo, loader, api = services["mongo"], services["loader"], services["api"]
    assert mongo["image"].startswith("mongo:")
    assert "mongosh" in str(mongo["healthcheck"]["test"])
    assert loader["depends_on"] == {"mongo": {"condition": "service_healthy"}}
    assert loader["restart"] == "no"  # one-shot: never restarted into a loop
    assert api["depends_on"] == {
        "mongo": {"condition": "service_healthy"},
        "loader": {"condition": "service_completed_successfully"},
    }
    assert "/ready" in str(api["healthcheck"]["test"]) and "/health'" not in str(
        api["healthcheck"]["test"]
    )
    # The on-demand backup never starts with `up`.
    assert services["backup"]["profiles"] == ["backup"]
    assert services["backup"]["command"][:3] == ["tmdb-analytics", "backup", "create"]


def test_the_loader_loads_and_trains_and_fails_when_it_cannot(compose: dict[str, Any]) -> None:
    loader = compose["services"]["loader"]
    script = loader["command"][-1]
    assert "tmdb-analytics bootstrap" in script and "set -e" in script
    assert "exit 1" in script and "ACTIVE" in script  # no model trained: a failed loader
    # The image with training's extra (MLflow), which the service's image leaves out.
    assert loader["build"]["target"] == "trainer"
    assert compose["services"]["api"]["build"]["target"] == "runtime"
    stages = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), flags=re.M)
    assert {"trainer", "runtime"} <= set(stages) and stages[-1] == "runtime"
    # The models it trains reach the service through a volume the service only reads.
    assert "artifacts:/var/lib/tmdb-analytics/artifacts" in loader["volumes"]
    assert "artifacts:/var/lib/tmdb-analytics/artifacts:ro" in compose["services"]["api"]["volumes"]
    assert env(loader)["ARTIFACTS_DIR"] == "/var/lib/tmdb-analytics/artifacts"


def test_root_credentials_stay_in_the_mongo_container(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mongo_env = services["mongo"]["environment"]
    assert mongo_env["MONGO_INITDB_ROOT_PASSWORD"].startswith("${MONGO_ROOT_PASSWORD:?")
    for name, service in services.items():
        if name == "mongo":
            continue
        text = yaml.safe_dump(service)
        for var in ROOT_VARS:
            assert var not in text, f"{name} gets {var}"
        uri = env(service)["MONGODB_URI"]
        assert SHELL["MONGO_ROOT_PASSWORD"] not in uri
        assert uri.startswith(f"mongodb://tmdb_app:{SHELL['MONGO_APP_PASSWORD']}@mongo:27017/")
        assert uri.endswith("?authSource=tmdb")
    # MongoDB is reachable from the compose network only.
    assert "ports" not in services["mongo"]


def test_required_secrets_have_no_defaults(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    for missing in SHELL:
        shell = {k: v for k, v in SHELL.items() if k != missing}
        with pytest.raises(KeyError, match=missing):
            env(api, shell) if missing != "MONGO_ROOT_PASSWORD" else env(
                compose["services"]["mongo"], shell
            )


def test_the_init_script_creates_a_read_write_only_user(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["mongo"]["volumes"]
    init = next(m for m in mounts if m.endswith(":/docker-entrypoint-initdb.d:ro"))
    directory = REPO_ROOT / init.split(":")[0]
    scripts = sorted(directory.glob("*.js"))
    assert [p.name for p in scripts] == ["create-app-user.js"]
    source = scripts[0].read_text(encoding="utf-8")
    code = "\n".join(line for line in source.splitlines() if not line.strip().startswith("//"))
    assert "createUser(" in code
    assert re.findall(r'role:\s*"(\w+)"', code) == ["readWrite"]
    assert re.search(r"db:\s*dbName", code)  # on the service's database, no other
    for powerful in ("root", "dbOwner", "userAdmin", "clusterAdmin", "AnyDatabase", "dbAdmin"):
        assert powerful not in code
    # Names and password from the container's environment, never written in the file.
    for var in ("MONGO_APP_USER", "MONGO_APP_PASSWORD", "MONGO_APP_DB"):
        assert f"process.env.{var}" in code
    mongo_env = env(compose["services"]["mongo"])
    assert mongo_env["MONGO_APP_PASSWORD"] == SHELL["MONGO_APP_PASSWORD"]
    assert mongo_env["MONGO_APP_DB"] == "tmdb" and mongo_env["MONGO_APP_USER"] == "tmdb_app"


def _settings_from(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from exactly these environment variables, as the container reads them."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_service_settings_compose_gives_pass_the_production_checks(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("loader", "api", "backup"):
        values = env(compose["services"][name])
        assert values["APP_ENV"] == "production"
        # ADMIN_API_KEY left unset in the shell arrives empty: the same as unset.
        settings = _settings_from(values, monkeypatch)
        assert settings.mongodb_db == "tmdb" and not settings.mongodb_tls_enabled
        assert settings.admin_api_key is None
    # Unencrypted only because of the explicit allowance, which needs the unpublished port.
    values = env(compose["services"]["api"])
    del values["MONGODB_ALLOW_UNENCRYPTED"]
    with pytest.raises(ValueError, match="without TLS"):
        _settings_from(values, monkeypatch)
