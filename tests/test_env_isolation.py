"""The suite ignores the caller's configuration: a sample of it, run in a subprocess with every
service variable exported to a hostile value and a hostile `.env` in the working directory,
still passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.settings import Settings

REPO = Path(__file__).resolve().parents[1]
HOSTILE = {
    "ADMIN_API_KEY": "k" * 31,  # too short for production: the reported failure
    "JWT_SECRET": "dev-secret",
    "APP_ENV": "production",
    "MONGODB_URI": "mongodb://127.0.0.1:9/",  # nothing listens there
    "MONGODB_DB": "not_the_test_database",
    "ARTIFACTS_DIR": "/nonexistent/artifacts",
    "DATA_DIR": "/nonexistent/data",
    "RATE_LIMIT_PER_MINUTE": "1",
    "api_key_cache_seconds": "-1",  # lower case: pydantic-settings reads it all the same
}
# Settings built directly, through the app's fixtures and through the CLI's get_settings().
SAMPLE = [
    "tests/test_app_basics.py::test_production_refuses_placeholder_jwt_secret",
    "tests/test_app_basics.py::test_health_and_ready",
    "tests/test_auth.py::test_production_refuses_short_admin_key",
    "tests/test_auth.py::test_token_is_hs256_with_exp_sub_and_role",
    "tests/test_auth.py::test_cli_users_and_keys",
]


def test_hostile_environment_does_not_reach_the_tests(mongodb_uri: str, tmp_path: Path) -> None:
    assert {k.lower() for k in HOSTILE} <= set(Settings.model_fields)  # no typos
    # Run from a directory holding a hostile .env: pydantic-settings reads `.env` from the cwd.
    (tmp_path / ".env").write_text("APP_ENV=production\nJWT_SECRET=change-me\nADMIN_API_KEY=x\n")
    env = {**os.environ, **HOSTILE, "TEST_MONGODB_URI": mongodb_uri}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(REPO),
            "-c",
            str(REPO / "pyproject.toml"),
            *(str(REPO / test) for test in SAMPLE),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{len(SAMPLE)} passed" in result.stdout
