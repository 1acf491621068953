"""`tmdb-analytics db start|stop|status` when MONGODB_URI is set: the local server's own URI is
managed like an unset one (a restart script must not leave the database down), a remote one
is refused loudly by start and stop (exit 1) and reported by status (exit 0)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from app.cli import app as cli_app
from app.localdb import LocalServer, free_port
from app.settings import get_settings

Cli = Callable[..., Result]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalServer]:
    """Where LOCAL_DB_DIR/LOCAL_DB_PORT point; stopped afterwards whatever the test did."""
    server = LocalServer(directory=(tmp_path / "db").resolve(), port=free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cli(local: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("LOCAL_DB_DIR", str(local.directory))
    monkeypatch.setenv("LOCAL_DB_PORT", str(local.port))
    runner = CliRunner()

    def run(*args: str, uri: str | None = None) -> Result:
        if uri is None:
            monkeypatch.delenv("MONGODB_URI", raising=False)
        else:
            monkeypatch.setenv("MONGODB_URI", uri)
        get_settings.cache_clear()  # settings are read once per process; each call re-reads
        return runner.invoke(cli_app, ["db", *args])

    try:
        yield run
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_start_and_stop_manage_the_local_server_named_by_mongodb_uri(
    cli: Cli, local: LocalServer, host: str
) -> None:
    own = cli("uri").stdout.strip()
    assert own == local.uri
    uri = own if host == "127.0.0.1" else f"mongodb://{host}:{local.port}/?directConnection=true"

    started = cli("start", uri=uri)
    assert started.exit_code == 0, started.output
    assert "started" in started.output and local.accepts_connections()
    assert "already running" in cli("start", uri=uri).output
    status = cli("status", uri=uri)
    assert status.exit_code == 0 and "running pid=" in status.stdout
    # The restart a script does: stop, then start brings it back.
    stopped = cli("stop", uri=uri)
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert not local.is_running()
    assert cli("status", uri=uri).exit_code == 1
    restarted = cli("start", uri=uri)
    assert restarted.exit_code == 0, restarted.output
    assert local.is_running() and local.accepts_connections()


def test_a_remote_mongodb_uri_is_refused_by_start_and_stop(cli: Cli, local: LocalServer) -> None:
    assert cli("start").exit_code == 0  # a local server runs (MONGODB_URI unset)
    other_port = f"mongodb://127.0.0.1:{free_port()}/"
    for uri in ("mongodb://db.example:27017/", other_port, "mongodb+srv://cluster.example/"):
        for command in ("start", "stop"):
            result = cli(command, uri=uri)
            assert result.exit_code == 1, (command, uri, result.output)
            assert "not the local database" in result.output
        status = cli("status", uri=uri)
        assert status.exit_code == 0 and status.stdout.startswith("external: ")
    # `stop` with a remote URI left the local server alone.
    assert local.is_running()
    assert cli("stop").exit_code == 0 and not local.is_running()
