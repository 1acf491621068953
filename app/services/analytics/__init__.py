"""The analytics engine: a columnar snapshot of `movies` held in memory, rebuilt when the data
version changes, and every aggregate computed from it with results cached per (snapshot,
normalized query).

Why a snapshot: FerretDB's pipeline has no medians, percentiles, histograms or correlations,
and scans at ~0.3 ms per document, so every aggregate there would cost a full scan; MongoDB
could do more, but then answers would differ by backend. One read per data version, with a
projection, turns the catalogue into numpy columns that answer any filter in milliseconds.

One module per job: `snapshot` (reading and columnar layout), `titles` (the title trigram
index), `incremental` (applying changed films to a snapshot), `persist` (the snapshot file),
`refresh` (which of these gives the next snapshot), `aggregates` (the pure functions behind
each endpoint), `engine` (the current snapshot, version checks, the result cache; its
`readiness` is the `/ready` check).
"""

from app.services.analytics.aggregates import (
    DEFAULT_CORRELATION_FIELDS,
    MAX_CORRELATION_FIELDS,
    MONEY_FIELDS,
    STAT_FIELDS,
    companies,
    correlations,
    distribution,
    genres,
    languages,
    parse_fields,
    people,
    seasonality,
    summary,
    top,
    trends,
)
from app.services.analytics.engine import ENGINE_KEY, AnalyticsEngine, Result
from app.services.analytics.persist import SnapshotStore
from app.services.analytics.refresh import full_read as load_snapshot
from app.services.analytics.snapshot import (
    DOC_NUMERIC,
    NUMERIC_FIELDS,
    SNAPSHOT_PROJECTION,
    Lineage,
    MultiDim,
    SingleDim,
    Snapshot,
    SnapshotBuilder,
)

__all__ = [
    "DEFAULT_CORRELATION_FIELDS",
    "DOC_NUMERIC",
    "ENGINE_KEY",
    "MAX_CORRELATION_FIELDS",
    "MONEY_FIELDS",
    "NUMERIC_FIELDS",
    "SNAPSHOT_PROJECTION",
    "STAT_FIELDS",
    "AnalyticsEngine",
    "Lineage",
    "MultiDim",
    "Result",
    "SingleDim",
    "Snapshot",
    "SnapshotBuilder",
    "SnapshotStore",
    "companies",
    "correlations",
    "distribution",
    "genres",
    "languages",
    "load_snapshot",
    "parse_fields",
    "people",
    "seasonality",
    "summary",
    "top",
    "trends",
]
