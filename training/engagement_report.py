"""The engagement model's HTML evaluation report: one self-contained file (plots embedded as
PNG) beside each version, like the other models' (`training.report`)."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the report is rendered in a CLI or a CI job

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from app.ml.card import ModelCard
from training.engagement_types import EngagementEvaluation, OutputResult

UNITS = {"vote_count": "log1p(vote count)", "vote_average": "rating (0-10)"}


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _scatter(out: OutputResult) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    y = out.y_test
    for ax, pred, label in (
        (axes[0], out.pred_test, "model"),
        (axes[1], out.baseline_test, "baseline (genre/year median)"),
    ):
        ax.scatter(pred, y, s=8, alpha=0.5)
        lims = [min(y.min(), pred.min()), max(y.max(), pred.max())]
        ax.plot(lims, lims, color="black", linewidth=1)
        ax.set_xlabel(f"predicted {UNITS[out.name]}")
        ax.set_ylabel(f"actual {UNITS[out.name]}")
        ax.set_title(f"{out.name}: {label} (test)")
    return _png(fig)


def _residuals(out: OutputResult) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    residuals = out.y_test - out.pred_test
    ax.scatter(out.pred_test, residuals, s=8, alpha=0.5)
    ax.axhline(0, color="black", linewidth=1)
    for group, style in (("budget_known", "--"), ("budget_unknown", ":")):
        lo, hi = out.interval.offsets.get(group, out.interval.offsets["all"])
        ax.axhline(lo, color="C1", linestyle=style, label=f"80% interval, {group}")
        ax.axhline(hi, color="C1", linestyle=style)
    ax.legend(fontsize=8)
    ax.set_xlabel(f"predicted {UNITS[out.name]}")
    ax.set_ylabel("actual - predicted")
    ax.set_title(f"{out.name}: residuals and served interval")
    return _png(fig)


def _coverage(ev: EngagementEvaluation) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    levels = [50, 80, 95]
    width = 0.35
    for i, name in enumerate(ev.outputs):
        measured = ev.metrics[name]["coverage_by_level"]
        ax.bar(
            np.arange(len(levels)) + (i - 0.5) * width,
            [measured[str(level)] for level in levels],
            width,
            label=name,
        )
    ax.scatter(
        np.arange(len(levels)),
        [lv / 100 for lv in levels],
        color="black",
        zorder=3,
        label="nominal",
    )
    ax.set_xticks(np.arange(len(levels)), [f"{lv}%" for lv in levels])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of test films inside their interval")
    ax.set_title("Interval coverage on test films (calibrated on validation)")
    ax.legend(fontsize=8)
    return _png(fig)


def _importance(out: OutputResult) -> str:
    items = list(out.importance.items())[:15]
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(items) + 1.2))
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="C2")
    ax.set_xlabel(f"mean |contribution| on test films ({UNITS[out.name]})")
    ax.set_title(f"{out.name}: input field importance (occlusion)")
    return _png(fig)


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return html.escape(json.dumps(value))
    return f"{value:,.4f}" if abs(value) < 1e4 else f"{value:,.0f}"


def _comparison(ev: EngagementEvaluation) -> str:
    rows = []
    for name in ev.outputs:
        m = ev.metrics[name]
        base = m["baseline"]
        for key, value in m.items():
            if key in base:
                rows.append(
                    f"<tr><th>{name}</th><th>{html.escape(key)}</th>"
                    f"<td>{_number(value)}</td><td>{_number(base[key])}</td></tr>"
                )
    return (
        "<table><tr><th>output</th><th>metric</th><th>model</th><th>baseline</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _other_metrics(ev: EngagementEvaluation) -> str:
    rows = []
    for name in ev.outputs:
        m = ev.metrics[name]
        for key, value in m.items():
            if key != "baseline" and key not in m["baseline"]:
                rows.append(
                    f"<tr><th>{name}</th><th>{html.escape(key)}</th><td>{_number(value)}</td></tr>"
                )
    for key, value in ev.ablation.items():
        rows.append(
            f"<tr><th>ablation</th><th>{html.escape(key)}</th><td>{_number(value)}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _candidates(ev: EngagementEvaluation) -> str:
    rows = []
    for c in ev.candidates:
        name, _, family = c.family.partition(":")
        spec = ev.chosen.get(name)
        chosen = spec is not None and (spec.family, spec.params) == (family, c.params)
        scores = ", ".join(f"{k}={v:.4f}" for k, v in c.validation.items())
        rows.append(
            f"<tr><td>{'<b>chosen</b>' if chosen else ''}</td><td>{html.escape(c.family)}</td>"
            f"<td><code>{html.escape(json.dumps(c.params))}</code></td><td>{scores}</td>"
            f"<td>{c.fit_seconds:.1f}s</td></tr>"
        )
    return (
        "<table><tr><th></th><th>output:family</th><th>params</th><th>validation</th>"
        "<th>fit</th></tr>" + "".join(rows) + "</table>"
    )


def render_report(card: ModelCard, ev: EngagementEvaluation) -> str:
    plots: list[tuple[str, str]] = [("Interval coverage", _coverage(ev))]
    for out in ev.outputs.values():
        plots += [
            (f"{out.name}: predicted vs actual", _scatter(out)),
            (f"{out.name}: residuals", _residuals(out)),
            (f"{out.name}: importance", _importance(out)),
        ]
    figures = "".join(
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
        for title, data in plots
    )
    split = card.data.split
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{card.name} {card.version}: evaluation</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; max-width: 70rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }}
figure {{ display: inline-block; margin: 0 1rem 1.5rem 0; vertical-align: top; }}
figcaption {{ font-weight: 600; margin-bottom: 0.3rem; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Model <code>{card.name}</code>, version <code>{card.version}</code></h1>
<p>{html.escape(card.target)}. Chosen: <b>{html.escape(card.family)}</b>; audience track
record (earlier films' votes and ratings of director, cast, companies):
<b>{"kept" if ev.vote_history else "dropped"}</b> (ablation below).
Served model: {html.escape(card.final_fit)}. Created {card.created_at.isoformat()}
from {html.escape(card.data.source)} ({card.data.films} films, data sha256
<code>{card.data.sha256[:16]}</code>), git <code>{html.escape(card.git_sha or "unknown")}</code>.
</p>
<h2>Split</h2>
<p>{html.escape(split.reason)}.<br>train {split.train}, validation {split.validation},
test {split.test}; train until {split.train_until or "-"}, test from {split.test_from or "-"}.
</p>
<h2>Test: model against the naive baseline (same films)</h2>
<p>Baseline: {html.escape(str(card.params.get("baseline", "")))}.</p>
{_comparison(ev)}
<h2>Intervals, credits, ablation</h2>
{_other_metrics(ev)}
<h2>Model comparison (validation)</h2>
{_candidates(ev)}
<h2>Plots</h2>
{figures}
<p><small>This product uses the TMDB API but is not endorsed or certified by TMDB.</small></p>
</body></html>
"""
