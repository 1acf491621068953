"""Short garbage-collector pauses for a serving process.

CPython's cyclic collector stops the whole process while it runs, and a full (oldest
generation) pass walks every tracked object. Once the service has started, that means the
imported libraries (FastAPI, pydantic, pandas, scikit-learn...) and the loaded models: about
200,000 objects, which take 0.3-1 s to walk on this project's 2-core machine. Such a pass
comes whenever enough objects have survived into the oldest generation, which busy traffic
causes within seconds (the objects of requests in flight survive the young collections), and
every request in flight then waits for it: under saturation, these pauses made the slowest
1% of requests 10-30 times slower than the median.

`freeze_startup_heap()` runs one full collection when startup is done, then moves every
object still alive into the permanent generation (`gc.freeze()`), which later passes do not
walk: full passes then cost what was allocated since (milliseconds). Objects frozen are still
freed by reference counting when released; only reference cycles among them are never
reclaimed, which is fine for what lives as long as the process (modules, models, the app).
Done once per process (a test process builds many apps: only the first one's live objects
are frozen). `GC_FREEZE=false` turns it off.

What startup leaves to a background thread (numba and the compiled tree walk,
`app.ml.tree_kernel`: about 76,000 more objects) is frozen when that thread is done
(`freeze_late_arrivals`): left in the oldest generation, it made every full pass a third
longer and the batch predictions' slowest 5% about 40% slower.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("app.heap")

_frozen = False


def freeze_startup_heap() -> None:
    """Collect once, then freeze what survives (the first call in a process only)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info(
        "heap frozen after startup: %d objects in %.2fs",
        gc.get_freeze_count(),
        time.perf_counter() - started,
    )


def freeze_late_arrivals(what: str) -> None:
    """Freeze what a background part of startup has just loaded, once the startup heap is
    frozen (no collection first: that would stop the process while it serves)."""
    if not _frozen:
        return
    before = gc.get_freeze_count()
    gc.freeze()
    log.info("heap frozen after %s: %d more objects", what, gc.get_freeze_count() - before)
