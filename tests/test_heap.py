"""The heap is frozen out of the garbage collector's full passes once startup is done
(app.heap), once per process, and not at all with `GC_FREEZE=false`. Each case runs in a
process of its own: the test process has frozen its heap already, with its first app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import STARTUP_TIMEOUT_SECONDS

# Two app startups in one process; prints the frozen object count after each, and how long a
# full collection takes after the second.
SCRIPT = """
import asyncio, gc, json, sys, time
from pathlib import Path
from asgi_lifespan import LifespanManager
from app.main import create_app
from app.settings import Settings

async def main() -> None:
    uri, db, work, freeze = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "1"
    counts = []
    for _ in range(2):
        settings = Settings(app_env="test", mongodb_uri=uri, mongodb_db=db, gc_freeze=freeze,
                            artifacts_dir=work / "artifacts", local_db_dir=work / "localdb",
                            compiled_tree_walk=False)
        async with LifespanManager(create_app(settings), startup_timeout=TIMEOUT):
            counts.append(gc.get_freeze_count())
    started = time.perf_counter()
    gc.collect()
    print(json.dumps({"counts": counts, "collect": time.perf_counter() - started}))

asyncio.run(main())
""".replace("TIMEOUT", str(STARTUP_TIMEOUT_SECONDS))


# One startup with the compiled tree walk, built in the background: the freeze count when
# startup is done, and once the kernel serves.
LATE_SCRIPT = """
import asyncio, gc, json, sys, time
from pathlib import Path
from asgi_lifespan import LifespanManager
from app.main import create_app
from app.ml import tree_kernel
from app.settings import Settings

async def main() -> None:
    uri, db, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    settings = Settings(app_env="test", mongodb_uri=uri, mongodb_db=db,
                        artifacts_dir=work / "artifacts", local_db_dir=work / "localdb")
    async with LifespanManager(create_app(settings), startup_timeout=TIMEOUT):
        started = gc.get_freeze_count()
        ready_by = time.monotonic() + 120
        while tree_kernel.ready() is None and time.monotonic() < ready_by:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the thread freezes right after the kernel is ready
        print(json.dumps({"started": started, "ready": gc.get_freeze_count(),
                          "kernel": tree_kernel.ready() is not None,
                          "cache": sorted(p.name for p in (work / "localdb").iterdir())}))

asyncio.run(main())
""".replace("TIMEOUT", str(STARTUP_TIMEOUT_SECONDS))


def startups(
    mongodb_uri: str, db_name: str, work: Path, freeze: bool, script: str = SCRIPT
) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script, mongodb_uri, db_name, str(work), "1" if freeze else "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
        # An app started earlier in this test process has set numba's cache directory.
        env={k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_startup_freezes_the_heap_once(mongodb_uri: str, db_name: str, tmp_path: Path) -> None:
    frozen = startups(mongodb_uri, db_name, tmp_path, freeze=True)
    counts = frozen["counts"]
    assert isinstance(counts, list)
    # The imported libraries and the app: tens of thousands of objects at least.
    assert counts[0] > 50_000
    # The second app in the process froze nothing more (frozen objects released since by
    # reference counting leave the permanent generation, so the count may only go down).
    assert counts[1] <= counts[0]
    plain = startups(mongodb_uri, db_name, tmp_path, freeze=False)
    assert plain["counts"] == [0, 0]
    # What the freeze is for: a full pass walks only what was allocated since.
    assert isinstance(frozen["collect"], float) and isinstance(plain["collect"], float)
    assert frozen["collect"] < plain["collect"]


def test_what_the_compiled_tree_walk_loads_after_startup_is_frozen_too(
    mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    """numba and the kernel arrive after the startup freeze, from a background thread:
    ~76,000 objects that full passes would otherwise walk again and again."""
    late = startups(mongodb_uri, db_name, tmp_path, True, LATE_SCRIPT)
    assert late["kernel"] is True
    started, ready = late["started"], late["ready"]
    assert isinstance(started, int) and isinstance(ready, int)
    assert ready - started > 20_000
    cache = late["cache"]
    assert isinstance(cache, list) and "kernel-cache" in cache  # numba's, beside the data
