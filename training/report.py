"""The HTML evaluation report: one self-contained file (plots embedded as PNG) per version."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: the report is rendered in a CLI or a CI job

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from app.ml.card import ModelCard
from training.types import Evaluation

sns.set_theme(style="whitegrid", context="notebook")


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 6.4, height: float = 4.2) -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def _target_distribution(ev: Evaluation) -> str:
    fig, ax = _figure()
    if ev.task.kind == "regression":
        sns.histplot(ev.y_train, ax=ax, stat="density", label="train", color="C0", alpha=0.5)
        sns.histplot(ev.y_test, ax=ax, stat="density", label="test", color="C1", alpha=0.5)
        ax.set_xlabel("log1p(worldwide revenue, USD)")
    else:
        rates = [ev.y_train.mean(), ev.y_test.mean()]
        sns.barplot(x=["train", "test"], y=rates, ax=ax, hue=["train", "test"], legend=False)
        ax.set_ylabel("share of hits (revenue >= 2 x budget)")
        ax.set_ylim(0, 1)
    ax.set_title("Target distribution")
    if ev.task.kind == "regression":
        ax.legend()
    return _png(fig)


def _correlations(ev: Evaluation) -> str:
    size = max(4.0, 0.45 * len(ev.corr_names) + 2)
    fig, ax = _figure(size + 1.5, size)
    sns.heatmap(
        ev.corr_matrix,
        xticklabels=ev.corr_names,
        yticklabels=ev.corr_names,
        cmap="vlag",
        center=0,
        vmin=-1,
        vmax=1,
        annot=len(ev.corr_names) <= 13,
        fmt=".2f",
        annot_kws={"size": 7},
        ax=ax,
    )
    ax.set_title("Correlations: target and its most correlated features (test films)")
    ax.tick_params(labelsize=8)
    return _png(fig)


def _importance(ev: Evaluation, method: str) -> str:
    items = list(ev.importance.items())[:15]
    fig, ax = _figure(6.4, 0.32 * len(items) + 1.2)
    sns.barplot(x=[v for _, v in items], y=[k for k, _ in items], ax=ax, color="C2")
    unit = "log revenue" if ev.task.kind == "regression" else "probability"
    ax.set_xlabel(f"mean |contribution| on test films ({unit})")
    label = "SHAP, TreeExplainer" if method == "shap" else "occlusion"
    ax.set_title(f"Global input field importance ({label}, as returned by explain=true)")
    return _png(fig)


def _reliability(ev: Evaluation) -> str:
    """Equal-width bins of predicted P(hit) against the observed share, with film counts."""
    table = (ev.calibration or {}).get("reliability") or []
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 6), height_ratios=[3, 1], sharex=True)
    pred = [r["predicted"] for r in table]
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    axes[0].plot(pred, [r["observed"] for r in table], marker="o", label="model (test films)")
    if ev.pred_baseline is not None:
        from training.evaluate import reliability_table

        base = reliability_table(ev.y_test, ev.pred_baseline)
        axes[0].plot(
            [r["predicted"] for r in base],
            [r["observed"] for r in base],
            marker="x",
            alpha=0.6,
            label="today's model (schema 1)",
        )
    axes[0].set_ylabel("observed share of hits")
    axes[0].legend(fontsize=8)
    ece = ev.metrics.get("ece", float("nan"))
    axes[0].set_title(f"Reliability (test, 10 equal-width bins): ECE {ece:.3f}")
    axes[1].bar([(r["low"] + r["high"]) / 2 for r in table], [r["n"] for r in table], width=0.09)
    axes[1].set_xlabel("predicted P(hit)")
    axes[1].set_ylabel("films")
    axes[1].set_xlim(0, 1)
    return _png(fig)


def _rows(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>-</p>"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k, '')))}</td>" for k in keys) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return value if isinstance(value, str) else json.dumps(value)


def _selection_html(card: ModelCard, ev: Evaluation) -> str:
    sel = card.selection or {}
    if not sel:
        return ""
    metric = ev.task.selection_metric
    parts = [
        "<h2>Model selection</h2>",
        f"<p>{html.escape(str(sel.get('search_space', {}).get('cv', '')))}; folds "
        f"(train/validation films): "
        + ", ".join(f"{f['train']}/{f['validation']}" for f in sel.get("folds", []))
        + f". Metric: mean {metric} over folds.</p>",
        "<h3>Feature ablation (each group kept only if it improves the cross-validated "
        "score, with the reference model)</h3>",
        _rows(sel.get("ablation", [])),
        f"<p>Kept: <b>{html.escape(', '.join(sel.get('features', [])) or 'none')}</b>.</p>",
        "<h3>Stacking</h3>",
        f"<pre>{html.escape(json.dumps(sel.get('stacking', {}), indent=1))}</pre>",
        "<h3>Search space</h3>",
        f"<pre>{html.escape(json.dumps(sel.get('search_space', {}), indent=1))}</pre>",
    ]
    return "".join(parts)


def _baseline_html(card: ModelCard) -> str:
    m = card.metrics
    if "baseline_schema1_rmsle" in m:
        rows = [
            {"model": "today's (schema 1, old default)", "test RMSLE": m["baseline_schema1_rmsle"]},
            {"model": f"this version ({card.family})", "test RMSLE": m["rmsle"]},
        ]
    elif "baseline_schema1_roc_auc" in m:
        rows = [
            {
                "model": "today's (schema 1, old default)",
                "test ROC AUC": m["baseline_schema1_roc_auc"],
                "Brier": m.get("baseline_schema1_brier", float("nan")),
                "ECE": m.get("baseline_schema1_ece", float("nan")),
            },
            {
                "model": f"this version ({card.family})",
                "test ROC AUC": m["roc_auc"],
                "Brier": m["brier"],
                "ECE": m.get("ece", float("nan")),
            },
        ]
    else:
        return ""
    return "<h2>Compared with today's model (same test films)</h2>" + _rows(rows)


def _intervals_html(card: ModelCard) -> str:
    spec = card.interval
    if spec is None or not spec.coverage_test_levels:
        return ""
    rows = [
        {"nominal": float(level), "test coverage": cov, "gap (points)": 100 * (cov - float(level))}
        for level, cov in sorted(spec.coverage_test_levels.items())
    ]
    return (
        f"<h2>Intervals</h2><p>{html.escape(spec.method)}; {spec.calibration_rows} "
        "calibration residuals in the served offsets.</p>" + _rows(rows)
    )


def _candidates(ev: Evaluation) -> str:
    metric = ev.task.selection_metric
    labels = [
        f"{c.family}\n" + ",".join(f"{k}={v}" for k, v in list(c.params.items())[:3])
        for c in ev.candidates
    ]
    values = [c.validation.get("cv_mean", c.validation.get(metric, 0.0)) for c in ev.candidates]
    fig, ax = _figure(8.5, 0.45 * len(labels) + 1.2)
    colors = [
        "C3" if (c.family, c.params) == (ev.chosen.family, ev.chosen.params) else "C0"
        for c in ev.candidates
    ]
    ax.barh(labels, values, color=colors)
    ax.set_xlabel(
        f"cross-validated {metric} ({'higher' if ev.task.higher_is_better else 'lower'} is better)"
    )
    lo = min(values)
    ax.set_xlim(lo - 0.05 * abs(lo), max(values) + 0.02 * abs(max(values)))
    ax.tick_params(labelsize=7)
    ax.set_title("Model comparison (chosen in red)")
    return _png(fig)


def _regression_plots(ev: Evaluation) -> list[tuple[str, str]]:
    y, p = ev.y_test, ev.pred_test
    fig, ax = _figure()
    known = ev.test_budget_known
    ax.scatter(p[known], y[known], s=8, alpha=0.5, label="budget known")
    ax.scatter(p[~known], y[~known], s=8, alpha=0.7, label="budget unknown", color="C3")
    lims = [min(y.min(), p.min()), max(y.max(), p.max())]
    ax.plot(lims, lims, color="black", linewidth=1)
    ax.set_xlabel("predicted log1p(revenue)")
    ax.set_ylabel("actual log1p(revenue)")
    ax.set_title("Predicted vs actual (test)")
    ax.legend()
    scatter = _png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    residuals = y - p
    sns.histplot(residuals, ax=axes[0], bins=40)
    axes[0].set_xlabel("residual (actual - predicted, log)")
    axes[0].set_title("Residual distribution (test)")
    axes[1].scatter(p, residuals, s=8, alpha=0.5)
    axes[1].axhline(0, color="black", linewidth=1)
    if ev.interval is not None:
        for group, style in (("budget_known", "--"), ("budget_unknown", ":")):
            lo, hi = ev.interval.offsets.get(group, ev.interval.offsets["all"])
            axes[1].axhline(lo, color="C1", linestyle=style, label=f"interval, {group}")
            axes[1].axhline(hi, color="C1", linestyle=style)
        axes[1].legend(fontsize=8)
    axes[1].set_xlabel("predicted log1p(revenue)")
    axes[1].set_title("Residuals vs prediction")
    residual = _png(fig)
    return [("Predicted vs actual", scatter), ("Residuals", residual)]


def _classification_plots(ev: Evaluation) -> list[tuple[str, str]]:
    y, p = ev.y_test, ev.pred_test
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(y, p)
    axes[0].plot(fpr, tpr, label=f"AUC {ev.metrics['roc_auc']:.3f}")
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle="--")
    axes[0].set_xlabel("false positive rate")
    axes[0].set_ylabel("true positive rate")
    axes[0].set_title("ROC (test)")
    axes[0].legend()
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    axes[1].plot(prob_pred, prob_true, marker="o")
    axes[1].plot([0, 1], [0, 1], color="grey", linestyle="--")
    axes[1].set_xlabel("predicted probability")
    axes[1].set_ylabel("observed share of hits")
    axes[1].set_title("Calibration (test, deciles)")
    roc_cal = _png(fig)
    cm = ev.metrics["confusion_matrix"]
    fig, ax = _figure(4.8, 4)
    sns.heatmap(
        np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]]),
        annot=True,
        fmt="d",
        cmap="Blues",
        xticklabels=["predicted flop", "predicted hit"],
        yticklabels=["actual flop", "actual hit"],
        ax=ax,
        cbar=False,
    )
    ax.set_title(f"Confusion matrix at threshold {ev.threshold:.3f} (test)")
    confusion = _png(fig)
    fig, ax = _figure()
    sns.histplot(
        x=p, hue=np.where(y == 1, "hit", "flop"), ax=ax, bins=30, stat="density", common_norm=False
    )
    if ev.threshold is not None:
        ax.axvline(ev.threshold, color="black", linestyle="--")
    ax.set_xlabel("predicted P(hit)")
    ax.set_title("Predicted probabilities by outcome (test)")
    dist = _png(fig)
    return [("ROC and calibration", roc_cal), ("Confusion matrix", confusion), ("Scores", dist)]


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, float):
            shown = f"{value:,.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
        else:
            shown = html.escape(json.dumps(value))
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{shown}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _calibration_html(card: ModelCard) -> str:
    cal = card.calibration
    if not cal:
        return ""
    shown = {k: v for k, v in cal.items() if k != "reliability"}
    return (
        "<h2>Calibration of P(hit)</h2><p>Method chosen by Brier score on the last "
        "cross-validation fold, fitted on out-of-fold scores.</p>" + _metrics_table(shown)
    )


def write_report(path: Path, card: ModelCard, ev: Evaluation) -> None:
    plots: list[tuple[str, str]] = [
        ("Target distribution", _target_distribution(ev)),
        ("Model comparison", _candidates(ev)),
    ]
    plots += _regression_plots(ev) if ev.task.kind == "regression" else _classification_plots(ev)
    if ev.task.kind == "classification" and ev.calibration:
        plots.append(("Reliability", _reliability(ev)))
    plots += [
        ("Feature importance", _importance(ev, card.explanations or "occlusion")),
        ("Correlations", _correlations(ev)),
    ]
    split = card.data.split
    figures = "".join(
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
        for title, data in plots
    )
    body = f"""<!doctype html>
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
<p>{html.escape(card.target)}. Chosen family: <b>{html.escape(card.family)}</b>.
Served model: {html.escape(card.final_fit)}. Created {card.created_at.isoformat()}
from {html.escape(card.data.source)} ({card.data.films} films, data sha256
<code>{card.data.sha256[:16]}</code>),
git <code>{html.escape(card.git_sha or "unknown")}</code>.</p>
<h2>Split</h2>
<p>{html.escape(split.reason)}.<br>train {split.train}, validation {split.validation},
test {split.test}; train until {split.train_until or "-"}, test from {split.test_from or "-"}.</p>
<h2>Test metrics (films no fitted model had seen)</h2>
{_metrics_table(card.metrics)}
<h2>Validation metrics of the chosen candidate</h2>
{_metrics_table(dict(card.validation_metrics))}
{_baseline_html(card)}
{_intervals_html(card)}
{_calibration_html(card)}
{_selection_html(card, ev)}
<h2>Plots</h2>
{figures}
<p><small>This product uses the TMDB API but is not endorsed or certified by TMDB.</small></p>
</body></html>
"""
    path.write_text(body, encoding="utf-8")
