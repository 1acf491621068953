"""The data exploration report of the catalogue: one self-contained HTML file.

Built from the analytics snapshot (the same columns and the same aggregate functions that
answer `/v1/analytics/*`, so its numbers are the API's) plus one projected read of what the
snapshot does not hold (text fields, secondary lists, quality flags, the source) and the last
ingest runs. Sections: overview, coverage and missing values, cleaning outcomes,
distributions, genres and languages over time, seasonality, correlations, outliers.

Every figure is a PNG drawn with matplotlib/seaborn (Agg, object API: no pyplot state, so
builds may run in any thread) and embedded as base64; the numbers behind each figure are in
an HTML table beside it. No script, no external resource: the service sends it with
`Content-Security-Policy: default-src 'none'; img-src data:; style-src 'unsafe-inline'`.

The CLI calls `write_eda_report(db, path)`; the service serves `GET /v1/reports/eda` from
`EdaReports`, which builds one report per data version off the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bson
import numpy as np
from pymongo.asynchronous.database import AsyncDatabase

from app.db import INGEST_RUNS, Document
from app.models.analytics import DistributionResponse, NumericField
from app.services import analytics
from app.services.analytics import DEFAULT_CORRELATION_FIELDS, Snapshot, load_snapshot
from app.services.analytics.engine import AnalyticsEngine
from app.services.filters import CatalogFilter
from app.services.meta_repo import get_data_version
from app.services.movies_repo import scan_raw_batches

if TYPE_CHECKING:  # matplotlib and seaborn are imported when a report is drawn (2 s of import)
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

log = logging.getLogger("app.reports")

ALL = CatalogFilter()
# (field, scale, what it is) of each histogram: log scales for amounts and counts, which
# span several orders of magnitude.
DISTRIBUTIONS: tuple[tuple[NumericField, str, str], ...] = (
    ("budget", "log", "Budget (USD)"),
    ("revenue", "log", "Worldwide revenue (USD)"),
    ("runtime", "linear", "Runtime (minutes)"),
    ("vote_count", "log", "TMDB votes"),
    ("vote_average", "linear", "TMDB rating (0-10)"),
    ("popularity", "log", "TMDB popularity"),
)
BINS = 30
# The API's default correlation fields, plus two the report can afford to show.
CORRELATION_FIELDS: tuple[NumericField, ...] = (
    *DEFAULT_CORRELATION_FIELDS,
    "release_year",
    "imdb_score",
)
# Outliers by Tukey's rule on these: as they are (None), or as log10(value + offset) for
# amounts and counts spanning orders of magnitude (ROI + 1 is the revenue/budget multiple).
IQR_FIELDS: tuple[tuple[NumericField, float | None], ...] = (
    ("runtime", None),
    ("budget", 0.0),
    ("revenue", 0.0),
    ("roi", 1.0),
    ("vote_count", 0.0),
)
TOP_GENRES = 10
TOP_LANGUAGES = 8
TOP_ROI = 15
RUNTIME_EXTREMES = 10
INGEST_RUNS_SHOWN = 5
ERRORS_SHOWN = 20
DUPLICATES_SHOWN = 20

# What the snapshot lacks, read once per report: small fields, lists counted, texts tested.
EXTRA_PROJECTION: dict[str, int] = {
    "_id": 0,
    "id": 1,
    "source": 1,
    "quality_flags": 1,
    "overview": 1,
    "tagline": 1,
    "homepage": 1,
    "status": 1,
    "original_title": 1,
    "belongs_to_collection": 1,
    "keywords": 1,
    "production_countries": 1,
    "spoken_languages": 1,
    "imdb.director": 1,
    "imdb.votes": 1,
}
EXTRA_FIELDS = (
    "overview",
    "tagline",
    "homepage",
    "status",
    "original_title",
    "belongs_to_collection",
    "keywords",
    "production_countries",
    "spoken_languages",
    "imdb",
)
CONTENT_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# One figure at a time: matplotlib's font cache and rc parameters are process-wide.
_DRAWING = threading.Lock()
_STYLE: dict[RcKeyType, Any] = {
    "figure.dpi": 90,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
}


# --- what is read ----------------------------------------------------------------------------


@dataclass
class Extras:
    """Counts over the fields the snapshot does not hold, from one projected read."""

    version: int
    films: int = 0
    known: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXTRA_FIELDS, 0))
    flags: dict[str, int] = field(default_factory=dict)
    flagged_films: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, docs: Iterable[dict[str, Any]]) -> None:
        for doc in docs:
            self.films += 1
            for name in EXTRA_FIELDS:
                value = doc.get(name)
                if name == "imdb":
                    value = value and (value.get("director") or value.get("votes"))
                if value not in (None, "", [], {}):
                    self.known[name] += 1
            flags = doc.get("quality_flags") or []
            if flags:
                self.flagged_films += 1
            for flag in flags:
                self.flags[str(flag)] = self.flags.get(str(flag), 0) + 1
            source = str(doc.get("source") or "unknown")
            self.sources[source] = self.sources.get(source, 0) + 1


def _add_batch(extras: Extras, batch: bytes) -> None:
    extras.add(bson.decode_all(batch))


async def read_extras(db: AsyncDatabase[Document]) -> Extras:
    """One pass over `movies` with a small projection, BSON decoded in a worker thread."""
    extras = Extras(version=await get_data_version(db))
    cursor = scan_raw_batches(db, EXTRA_PROJECTION)
    try:
        async for batch in cursor:
            await asyncio.to_thread(_add_batch, extras, cast(bytes, batch))
    finally:
        await cursor.close()
    return extras


async def read_ingest_runs(db: AsyncDatabase[Document]) -> list[dict[str, Any]]:
    """The latest TMDB API ingest runs (CSV imports keep no run record)."""
    projection = {"todo": 0, "current": 0, "partitions_done": 0}
    cursor = db[INGEST_RUNS].find({}, projection, sort=[("started_at", -1)], limit=5)
    return [dict(run) async for run in cursor]


# --- HTML helpers ----------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, kind: str = "auto") -> str:
    """A number as the report shows it: integers with thousands separators, amounts to the
    dollar, ratios to 3 decimals; unknown as an em dash."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "&mdash;"
    if isinstance(value, bool | str):
        return _e(value)
    if kind == "share":
        return f"{100 * float(value):.1f}%"
    if kind == "id":  # ids and years: no thousands separator
        return str(int(value))
    if isinstance(value, int | np.integer) or kind == "int":
        return f"{int(value):,}"
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    if kind == "money" or abs(number) >= 1e5:
        return f"{number:,.0f}"
    return f"{number:,.3f}"


def table(
    table_id: str,
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    caption: str | None = None,
) -> str:
    """An HTML table; cells are given already formatted (numbers) or escaped (text)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return (
        f'<table id="{_e(table_id)}">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


_NUMERIC_CELL = re.compile(r"^(?:[-+]?[0-9][0-9,]*(?:\.[0-9]+)?%?|&mdash;)$")


def _cell(text: str) -> str:
    """A table cell; numbers are right-aligned."""
    return f"<td class=n>{text}</td>" if _NUMERIC_CELL.match(text) else f"<td>{text}</td>"


def details(summary: str, content: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>{content}</details>"


def png(draw: Callable[[Figure], None], width: float = 7.0, height: float = 4.0) -> str:
    """Draw on a fresh figure (object API, Agg) and return it as a data: URL."""
    import matplotlib

    # No display: seaborn imports pyplot, which must not pick an interactive backend.
    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _DRAWING, matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        draw(fig)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure(src: str, alt: str) -> str:
    return f'<figure><img alt="{_e(alt)}" src="{src}"></figure>'


# --- sections --------------------------------------------------------------------------------


@dataclass
class Section:
    id: str
    title: str
    body: str


def _overview(snap: Snapshot, extras: Extras) -> Section:
    s = analytics.summary(snap, ALL)
    rows = [
        ("Films", fmt(s.catalogue_films)),
        ("Data version", fmt(snap.version, "id")),
        ("Release years", f"{fmt(s.year_min, 'id')} to {fmt(s.year_max, 'id')}"),
        ("Films with budget and revenue known", fmt(s.with_budget_and_revenue)),
        ("Distinct genres", fmt(s.distinct.genres)),
        ("Distinct original languages", fmt(s.distinct.languages)),
        ("Distinct production companies", fmt(s.distinct.companies)),
        ("Total known budget (USD)", fmt(s.totals.budget, "money")),
        ("Total known revenue (USD)", fmt(s.totals.revenue, "money")),
    ]
    rows += [(f"Source: {_e(k)}", fmt(v)) for k, v in sorted(extras.sources.items())]
    body = table("overview-table", ["Measure", "Value"], rows)
    if extras.version != snap.version:
        body += (
            f"<p class=note>The snapshot holds data version {snap.version}; the fields it "
            f"lacks were read at version {extras.version} (a write landed in between).</p>"
        )
    return Section("overview", "Overview", body)


def _coverage(snap: Snapshot, extras: Extras) -> Section:
    s = analytics.summary(snap, ALL)
    films = s.catalogue_films
    known = {name: c.known for name, c in s.coverage.items()}
    known["release_date"] = sum(1 for d in snap.release_dates if d)
    if extras.films == films:
        known.update(extras.known)
    rows = sorted(known.items(), key=lambda kv: (kv[1], kv[0]))
    missing = [(name, films - k, (films - k) / films if films else 0.0) for name, k in rows]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.barh([m[0] for m in missing], [100 * m[2] for m in missing], color="#c0504d")
        ax.set_xlabel("missing (% of films)")
        ax.set_xlim(0, 100)
        ax.set_title("Missing values per field")

    body = figure(png(draw, 7.0, max(3.0, 0.28 * len(missing) + 1)), "Missing values per field")
    body += table(
        "coverage-table",
        ["Field", "Known", "Missing", "Missing share"],
        [(_e(n), fmt(known[n]), fmt(m), fmt(share, "share")) for n, m, share in missing],
        "Unknown budget/revenue: 0 in TMDB means unknown and is stored as missing, never 0.",
    )
    return Section("coverage", "Coverage and missing values", body)


def _cleaning(snap: Snapshot, extras: Extras, runs: list[dict[str, Any]]) -> Section:
    flags = sorted(extras.flags.items(), key=lambda kv: -kv[1])
    body = "<h3>Quality flags set while cleaning</h3>"
    body += table(
        "flags-table",
        ["Flag", "Films"],
        [(_e(k), fmt(v)) for k, v in flags] or [("(none)", fmt(0))],
        "*_scaled_from_millions: an amount under 1,000 in the source, read as millions "
        f"(TMDB quirk). Films with any flag: {extras.flagged_films:,}.",
    )
    # Same normalized title and year: the duplicated-title quirk of the TMDB 5000 file.
    year = snap.num["release_year"]
    groups: dict[tuple[str, float], list[int]] = {}
    for row, title in enumerate(snap.titles_normalized):
        groups.setdefault((title, float(year[row])), []).append(row)
    dupes = sorted(
        ((k, rows) for k, rows in groups.items() if len(rows) > 1), key=lambda kv: -len(kv[1])
    )
    undated = sum(1 for d in snap.release_dates if not d)
    body += "<h3>Rules applied and what they caught</h3>"
    body += table(
        "cleaning-table",
        ["Rule", "Films"],
        [
            ("Budget unknown (0 or absent)", fmt(int(np.isnan(snap.num["budget"]).sum()))),
            ("Revenue unknown (0 or absent)", fmt(int(np.isnan(snap.num["revenue"]).sum()))),
            ("Runtime unknown (0 or absent)", fmt(int(np.isnan(snap.num["runtime"]).sum()))),
            ("No release date", fmt(undated)),
            (
                "Title and year shared with another film (kept: different ids)",
                fmt(sum(len(r) for _, r in dupes)),
            ),
        ],
    )
    if dupes:
        shown = [
            (
                _e(snap.titles[rows[0]]),
                fmt(None if np.isnan(key[1]) else int(key[1]), "id"),
                _e(", ".join(str(int(snap.ids[r])) for r in rows)),
            )
            for key, rows in dupes[:DUPLICATES_SHOWN]
        ]
        body += details(
            f"Shared titles ({len(dupes)} groups)",
            table("duplicates-table", ["Title", "Year", "TMDB ids"], shown),
        )
    body += "<h3>Rejected rows of the last imports</h3>"
    body += (
        "<p>CSV imports (<code>tmdb-analytics import</code>) print their rejected rows but do "
        "not record them in the database, so they cannot be shown here. TMDB API ingests "
        f"keep a run record in <code>{INGEST_RUNS}</code>: counts and the first errors.</p>"
    )
    if not runs:
        body += "<p id=no-ingest-runs>No TMDB API ingest run is recorded.</p>"
    else:
        rows = []
        for run in runs[:INGEST_RUNS_SHOWN]:
            counts = run.get("counts") or {}
            rows.append(
                (
                    _e(run.get("_id", "")),
                    _e(run.get("kind", "")),
                    _e(run.get("status", "")),
                    _e(_when(run.get("started_at"))),
                    fmt(counts.get("inserted", 0)),
                    fmt(counts.get("updated", 0)),
                    fmt(counts.get("rejected", 0)),
                    fmt(run.get("errors_total", 0)),
                )
            )
        body += table(
            "ingest-runs-table",
            ["Run", "Kind", "Status", "Started", "Inserted", "Updated", "Rejected", "Errors"],
            rows,
        )
        errors = (runs[0].get("errors") or [])[:ERRORS_SHOWN]
        if errors:
            body += details(
                f"Errors recorded by the last run ({len(errors)} shown)",
                table(
                    "ingest-errors-table",
                    ["TMDB id", "Kind", "Reason"],
                    [
                        (fmt(e.get("id"), "id"), _e(e.get("kind", "")), _e(e.get("reason", "")))
                        for e in errors
                    ],
                ),
            )
    return Section("cleaning", "Cleaning outcomes", body)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value or "")


def _distributions(snap: Snapshot) -> Section:
    answers: list[tuple[str, str, DistributionResponse]] = [
        (label, scale, analytics.distribution(snap, ALL, name, BINS, cast(Any, scale)))
        for name, scale, label in DISTRIBUTIONS
    ]

    def draw(fig: Figure) -> None:
        axes = fig.subplots(2, 3)
        for ax, (label, scale, d) in zip(axes.flat, answers, strict=True):
            if d.counts:
                edges = np.asarray(d.edges)
                ax.stairs(d.counts, edges, fill=True, color="#4f81bd", alpha=0.85)
                if scale == "log":
                    ax.set_xscale("log")
            ax.set_title(f"{label}\n(n={d.stats.n:,}{', log scale' if scale == 'log' else ''})")
            ax.set_ylabel("films")

    body = figure(png(draw, 11.0, 6.5), "Histograms of budget, revenue, runtime, votes")
    money = {"budget", "revenue"}
    body += table(
        "distributions-table",
        [
            "Field",
            "Known",
            "Unknown",
            "Left out (<= 0, log)",
            "Mean",
            "Median",
            "P25",
            "P75",
            "Min",
            "Max",
        ],
        [
            (
                _e(d.field),
                fmt(d.stats.n),
                fmt(d.unknown),
                fmt(d.excluded),
                *(
                    fmt(getattr(d.stats, k), "money" if d.field in money else "auto")
                    for k in ("mean", "median", "p25", "p75", "min", "max")
                ),
            )
            for _, _, d in answers
        ],
    )
    for _, scale, d in answers:
        rows = [
            (fmt(d.edges[i], "money" if d.field in money else "auto"),
             fmt(d.edges[i + 1], "money" if d.field in money else "auto"),
             fmt(c))
            for i, c in enumerate(d.counts)
        ]  # fmt: skip
        body += details(
            f"Bins of {d.field} ({scale})",
            table(f"bins-{d.field}", ["From", "To", "Films"], rows),
        )
    return Section("distributions", "Distributions", body)


def _counts_by_decade(snap: Snapshot, dim: Any, top: int) -> tuple[list[str], list[int], Any]:
    """Films per (label, decade) for the `top` labels with most films: labels, decades,
    matrix[label][decade]."""
    decade_codes = snap.decade.codes
    rows, codes = dim.entries(np.flatnonzero(decade_codes >= 0))
    totals = np.bincount(codes, minlength=dim.size)
    chosen = np.argsort(-totals, kind="stable")[:top]
    chosen = chosen[totals[chosen] > 0]
    matrix = np.zeros((chosen.size, len(snap.decade.labels)), dtype=np.int64)
    for i, code in enumerate(chosen):
        selected = rows[codes == code]
        matrix[i] = np.bincount(decade_codes[selected], minlength=len(snap.decade.labels))
    present = np.flatnonzero(matrix.sum(axis=0) > 0) if matrix.size else np.empty(0, dtype=int)
    labels = [str(dim.labels[c]) for c in chosen]
    decades = [int(snap.decade.labels[d]) for d in present]
    return labels, decades, matrix[:, present] if matrix.size else matrix


def _time(snap: Snapshot) -> Section:
    trends = analytics.trends(snap, ALL, "year")
    genre_labels, decades, genre_matrix = _counts_by_decade(snap, snap.genre, TOP_GENRES)
    lang_labels, lang_decades, lang_matrix = _counts_by_decade(snap, snap.language, TOP_LANGUAGES)
    per_decade = np.bincount(
        snap.decade.codes[snap.decade.codes >= 0], minlength=len(snap.decade.labels)
    )

    def draw(fig: Figure) -> None:
        import seaborn as sns

        ax1, ax2, ax3 = fig.subplots(1, 3)
        years = [int(i.period) for i in trends.items]
        ax1.plot(years, [i.count for i in trends.items], color="#4f81bd")
        ax1.set_title("Films released per year")
        if decades:
            shares = genre_matrix / np.maximum(per_decade[_decade_codes(snap, decades)], 1)
            sns.heatmap(
                100 * shares,
                ax=ax2,
                xticklabels=[f"{d}s" for d in decades],
                yticklabels=genre_labels,
                cmap="Blues",
                cbar_kws={"label": "% of the decade's films"},
            )
            ax2.set_title(f"Top {len(genre_labels)} genres by decade")
        if lang_decades:
            shares = lang_matrix / np.maximum(per_decade[_decade_codes(snap, lang_decades)], 1)
            sns.heatmap(
                100 * shares,
                ax=ax3,
                xticklabels=[f"{d}s" for d in lang_decades],
                yticklabels=lang_labels,
                cmap="Greens",
                cbar_kws={"label": "% of the decade's films"},
            )
            ax3.set_title(f"Top {len(lang_labels)} original languages by decade")

    body = figure(png(draw, 15.0, 4.8), "Films per year; genres and languages by decade")
    body += table(
        "genres-by-decade-table",
        ["Genre", *(f"{d}s" for d in decades)],
        [
            (_e(g), *(fmt(int(x)) for x in row))
            for g, row in zip(genre_labels, genre_matrix, strict=True)
        ],
        "Films per genre and decade of release (a film counts once per genre)",
    )
    body += table(
        "languages-by-decade-table",
        ["Language", *(f"{d}s" for d in lang_decades)],
        [
            (_e(g), *(fmt(int(x)) for x in row))
            for g, row in zip(lang_labels, lang_matrix, strict=True)
        ],
        "Films per original language and decade of release",
    )
    body += details(
        "Films per year",
        table(
            "films-per-year-table",
            ["Year", "Films", "Median revenue (USD)"],
            [(_e(i.period), fmt(i.count), fmt(i.revenue.median, "money")) for i in trends.items],
        ),
    )
    return Section("time", "Genres and languages over time", body)


def _decade_codes(snap: Snapshot, decades: list[int]) -> list[int]:
    labels = list(snap.decade.labels)
    return [labels.index(d) for d in decades]


def _seasonality(snap: Snapshot) -> Section:
    season = analytics.seasonality(snap, ALL)
    items = season.items

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        months = [i.month_name[:3] for i in items]
        ax.bar(months, [i.count for i in items], color="#9bbb59")
        ax.set_ylabel("films released")
        twin = ax.twinx()
        twin.plot(
            months, [(i.revenue.median or 0) / 1e6 for i in items], color="#c0504d", marker="o"
        )
        twin.set_ylabel("median revenue (M USD)", color="#c0504d")
        ax.set_title("Releases and median revenue by calendar month")

    body = figure(png(draw, 8.0, 4.0), "Releases and median revenue by month")
    body += table(
        "seasonality-table",
        ["Month", "Films", "Revenue known", "Median revenue (USD)", "Median ROI", "Mean rating"],
        [
            (
                _e(i.month_name),
                fmt(i.count),
                fmt(i.revenue.n),
                fmt(i.revenue.median, "money"),
                fmt(i.roi.median),
                fmt(i.vote_average.mean),
            )
            for i in items
        ],
    )
    return Section("seasonality", "Seasonality", body)


def _correlations(snap: Snapshot) -> Section:
    pearson = analytics.correlations(snap, ALL, CORRELATION_FIELDS, "pearson")
    spearman = analytics.correlations(snap, ALL, CORRELATION_FIELDS, "spearman")

    def draw(fig: Figure) -> None:
        import seaborn as sns

        for ax, answer in zip(fig.subplots(1, 2), (pearson, spearman), strict=True):
            matrix = np.array([[np.nan if x is None else x for x in row] for row in answer.matrix])
            sns.heatmap(
                matrix,
                ax=ax,
                xticklabels=answer.fields,
                yticklabels=answer.fields,
                cmap="vlag",
                center=0,
                vmin=-1,
                vmax=1,
                annot=True,
                fmt=".2f",
                annot_kws={"size": 7},
            )
            ax.set_title(f"{answer.method.capitalize()} (n={answer.n:,} films with all fields)")

    body = figure(png(draw, 13.0, 5.5), "Correlation matrices")
    for answer in (pearson, spearman):
        body += table(
            f"correlations-{answer.method}-table",
            ["", *answer.fields],
            [
                (_e(name), *(fmt(x) for x in row))
                for name, row in zip(answer.fields, answer.matrix, strict=True)
            ],
            f"{answer.method.capitalize()} over {answer.n:,} films knowing every field",
        )
    return Section("correlations", "Correlations", body)


def iqr_fences(values: Any) -> tuple[float, float, float, float]:
    """Q1, Q3 and Tukey's fences (Q1 - 1.5 IQR, Q3 + 1.5 IQR), numpy's linear percentiles."""
    q1, q3 = (float(x) for x in np.percentile(values, [25, 75]))
    return q1, q3, q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)


def _outliers(snap: Snapshot) -> Section:
    rows = []
    boxes: list[tuple[str, Any]] = []
    for name, offset in IQR_FIELDS:
        values = snap.num[name]
        values = values[~np.isnan(values)]
        label: str = name
        if offset is not None:
            # log10 of (value + offset): amounts and counts, and ROI as a revenue multiple.
            values = values + offset
            values = np.log10(values[values > 0])
            label = f"log10 {name}" if offset == 0 else f"log10 ({name} + {offset:g})"
        if values.size < 4:
            continue
        q1, q3, low, high = iqr_fences(values)
        below, above = int((values < low).sum()), int((values > high).sum())

        def shown(x: float, offset: float | None = offset) -> float:
            return x if offset is None else float(10**x) - offset

        kind = "money" if name in ("budget", "revenue") else "auto"
        rows.append(
            (
                _e(label),
                fmt(int(values.size)),
                fmt(shown(q1), kind),
                fmt(shown(q3), kind),
                fmt(shown(low), kind),
                fmt(shown(high), kind),
                fmt(below),
                fmt(above),
            )
        )
        boxes.append((label, values))
    top_roi = analytics.top(snap, ALL, "roi", TOP_ROI, "desc")
    runtime = snap.num["runtime"]
    known = np.flatnonzero(~np.isnan(runtime))
    _, _, low, high = iqr_fences(runtime[known]) if known.size >= 4 else (0, 0, -np.inf, np.inf)
    by_runtime = known[np.argsort(runtime[known], kind="stable")]
    short = [r for r in by_runtime[:RUNTIME_EXTREMES] if runtime[r] < low]
    long = [r for r in by_runtime[::-1][:RUNTIME_EXTREMES] if runtime[r] > high]

    def draw(fig: Figure) -> None:
        axes = fig.subplots(1, len(boxes)) if boxes else []
        for ax, (label, values) in zip(np.atleast_1d(axes), boxes, strict=True):
            ax.boxplot(values, whis=1.5, flierprops={"markersize": 2, "alpha": 0.4})
            ax.set_title(label)
            ax.set_xticks([])

    body = figure(png(draw, 12.0, 3.8), "Box plots with Tukey fences")
    body += table(
        "iqr-table",
        ["Field", "Known", "Q1", "Q3", "Lower fence", "Upper fence", "Below", "Above"],
        rows,
        "Tukey's rule: outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR]; amounts and votes on log10 "
        "(fences shown back in units).",
    )
    body += table(
        "top-roi-table",
        ["TMDB id", "Title", "Year", "ROI"],
        [
            (fmt(i.id, "id"), _e(i.title), fmt(i.release_year, "id"), fmt(i.value))
            for i in top_roi.items
        ],
        "Highest ROI, (revenue - budget) / budget: often a tiny or mis-scaled budget",
    )

    def film_rows(picked: list[Any]) -> list[tuple[str, ...]]:
        year = snap.num["release_year"]
        return [
            (
                fmt(int(snap.ids[r]), "id"),
                _e(snap.titles[r]),
                fmt(None if np.isnan(year[r]) else int(year[r]), "id"),
                fmt(float(runtime[r])),
            )
            for r in picked
        ]

    body += table(
        "runtime-extremes-table",
        ["TMDB id", "Title", "Year", "Runtime (min)"],
        film_rows(short) + film_rows(long),
        f"Shortest and longest films beyond the runtime fences ({fmt(low)} to {fmt(high)} min)",
    )
    return Section("outliers", "Outliers", body)


SECTION_IDS = (
    "overview",
    "coverage",
    "cleaning",
    "distributions",
    "time",
    "seasonality",
    "correlations",
    "outliers",
)

_PAGE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 80rem; color: #222;
       padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-top: 1rem; }
nav ol { columns: 2; } .note, caption { color: #555; font-size: 0.85rem; text-align: left; }
table { border-collapse: collapse; margin: 0.5rem 0 1.2rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.5rem 0; } img { max-width: 100%; height: auto; }
details { margin: 0.3rem 0 0.8rem; } summary { cursor: pointer; color: #345; }
"""


def render_eda(snap: Snapshot, extras: Extras, runs: list[dict[str, Any]]) -> str:
    """The whole report as one HTML document (CPU-bound: run it in a worker thread)."""
    started = time.perf_counter()
    if snap.size == 0:
        sections = [Section("overview", "Overview", "<p>The catalogue is empty.</p>")]
    else:
        sections = [
            _overview(snap, extras),
            _coverage(snap, extras),
            _cleaning(snap, extras, runs),
            _distributions(snap),
            _time(snap),
            _seasonality(snap),
            _correlations(snap),
            _outliers(snap),
        ]
    nav = "".join(f'<li><a href="#{s.id}">{_e(s.title)}</a></li>' for s in sections)
    content = "".join(
        f'<section id="{s.id}"><h2>{_e(s.title)}</h2>{s.body}</section>' for s in sections
    )
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    log.info("EDA report for data version %s in %.2fs", snap.version, time.perf_counter() - started)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TMDB catalogue: data exploration report (data version {snap.version})</title>
<style>{_PAGE_STYLE}</style></head><body>
<h1>TMDB catalogue: data exploration report</h1>
<p class=note>Data version {snap.version}, {snap.size:,} films; generated {generated}.
Statistics use known values only (an unknown budget or revenue is never 0). The numbers are
those of <code>/v1/analytics/*</code> with no filter.
This product uses the TMDB API but is not endorsed or certified by TMDB.</p>
<nav><ol>{nav}</ol></nav>
{content}
</body></html>
"""


# --- entry points ----------------------------------------------------------------------------


async def build_eda_report(db: AsyncDatabase[Document], snapshot: Snapshot | None = None) -> str:
    """The report as HTML, from `snapshot` (the service passes its engine's) or a snapshot
    read here (the CLI), plus one projected read of what the snapshot lacks."""
    snap = snapshot if snapshot is not None else await load_snapshot(db)
    extras, runs = await asyncio.gather(read_extras(db), read_ingest_runs(db))
    return await asyncio.to_thread(render_eda, snap, extras, runs)


async def write_eda_report(
    db: AsyncDatabase[Document], path: Path, snapshot: Snapshot | None = None
) -> Path:
    """Build the report and write it to `path` (UTF-8); returns the path."""
    text = await build_eda_report(db, snapshot)
    await asyncio.to_thread(path.write_text, text, "utf-8")
    return path


class EdaReports:
    """The service's report: one per data version, kept in memory, built once (concurrent
    requests share the build, which finishes and is kept even if they go away)."""

    def __init__(self, db: AsyncDatabase[Document], engine: AnalyticsEngine) -> None:
        self._db = db
        self._engine = engine
        self._report: tuple[int, bytes] | None = None
        self._builds: dict[int, asyncio.Task[bytes]] = {}

    async def current(self) -> tuple[int, bytes]:
        """(data version, HTML bytes) of the engine's current snapshot."""
        snap = await self._engine.snapshot()
        report = self._report
        if report is not None and report[0] == snap.version:
            return report
        task = self._builds.get(snap.version)
        if task is None:
            task = asyncio.create_task(self._build(snap))
            self._builds[snap.version] = task
            task.add_done_callback(lambda _: self._builds.pop(snap.version, None))
        return snap.version, await asyncio.shield(task)

    async def _build(self, snap: Snapshot) -> bytes:
        body = (await build_eda_report(self._db, snap)).encode("utf-8")
        if self._report is None or self._report[0] <= snap.version:
            self._report = (snap.version, body)
        return body

    async def close(self) -> None:
        tasks = list(self._builds.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
