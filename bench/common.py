"""What every benchmark shares: one percentile, one way to run a server process and wait for
it, the uvicorn command of this service, and one writer of `bench/RESULTS.md` sections."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

if TYPE_CHECKING:
    from app.localdb import LocalServer

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100), interpolated linearly as numpy and pandas do."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def service_command(port: int, *, workers: int = 1) -> list[str]:
    """This service under uvicorn on 127.0.0.1:`port`, quiet, as the benchmarks run it."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


@contextmanager
def server_process(
    cmd: list[str], env: dict[str, str], log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` from the repository root (output to `log`, or discarded); stop it on exit."""
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


@contextmanager
def scratch_database(prefix: str) -> Iterator[tuple[Path, LocalServer]]:
    """A temporary folder holding a throwaway FerretDB, started. On the way out the server
    stops and the folder goes, unless the benchmark failed: then the folder (server logs in
    it) is kept and named on stderr."""
    from app.localdb import LocalServer, free_port

    work = Path(tempfile.mkdtemp(prefix=prefix))
    db = LocalServer(directory=work / "ferretdb", port=free_port())
    db.start()
    try:
        yield work, db
    except BaseException:
        db.stop()
        print(f"benchmark failed; server logs kept in {work}", file=sys.stderr)
        raise
    db.stop()
    shutil.rmtree(work, ignore_errors=True)


def wait_until(
    url: str, proc: subprocess.Popen[bytes], log: Path | None = None, timeout: float = 120
) -> None:
    """Poll `url` until it answers 200; fail at once if the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None else ""
            raise RuntimeError(f"{url}: server exited (see {log}):\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: not up after {timeout:g}s (see {log})")


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace the section between `<!-- name:start -->` and `<!-- name:end -->` in
    RESULTS.md (appending it the first time); every other section is kept."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")
