"""Today's models against this branch's, on the same time-split test films.

Two steps, because the two models need their own code to unpickle and score:

1. `dump`, run once in each source tree (PYTHONPATH=<tree>), reads the films the way
   training does, rebuilds each task's time split, loads the version trained with
   `--no-refit` (fitted on train+validation, never on test) from `--artifacts` and writes
   the test film ids, targets, scores and the card's interval offsets to `--out`.
2. `compare` checks both dumps hold the same films in the same order, computes revenue
   RMSLE, interval coverage at every level a model offers (50/80/95 where it has them),
   hit ROC AUC, Brier score and ECE, and writes the `models` section of bench/RESULTS.md.

The commands, as recorded in bench/RESULTS.md, are in `COMMAND` below.

Only the standard library, numpy, scikit-learn and joblib are imported at the top: `dump`
imports `app`/`training` from whichever tree PYTHONPATH names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
from sklearn.metrics import brier_score_loss, roc_auc_score

Array = npt.NDArray[np.float64]
DATA = Path("/work/shared/data")
LEVELS = ("0.50", "0.80", "0.95")
COMMAND = """
OPTS="--csv /work/shared/data/tmdb_5000_movies.train.csv \\
  --imdb-csv /work/shared/data/imdb_5000_movie_metadata.csv \\
  -m revenue -m hit --no-mlflow --no-activate --no-refit --no-report"
(cd /tmp/base && python -m training $OPTS --artifacts-dir /tmp/mcmp/base)
python -m training $OPTS --artifacts-dir /tmp/mcmp/new
(cd /tmp/base && PYTHONPATH=/tmp/base python $OLDPWD/bench/compare_models.py dump \\
  --artifacts /tmp/mcmp/base --out /tmp/mcmp/base-preds.json)
PYTHONPATH=. python bench/compare_models.py dump --artifacts /tmp/mcmp/new \\
  --out /tmp/mcmp/new-preds.json
python bench/compare_models.py compare /tmp/mcmp/base-preds.json /tmp/mcmp/new-preds.json
"""


def dump(artifacts: Path, out: Path, csv: Path, imdb: Path) -> None:
    from training.candidates import TASKS, predict
    from training.data import load_from_csv
    from training.split import time_split

    dataset = load_from_csv(csv, imdb)
    result: dict[str, Any] = {"tree": str(Path(sys.modules["training"].__file__ or "").parent)}
    for name in ("revenue", "hit"):
        task = TASKS[name]
        population = [r for r in dataset.records if task.population(r)]
        test = time_split(population).test
        version = sorted(p for p in (artifacts / name).iterdir() if p.is_dir())[-1]
        card = json.loads((version / "model_card.json").read_text(encoding="utf-8"))
        pipeline = joblib.load(version / "model.joblib")
        interval = card.get("interval") or {}
        levels = dict(interval.get("levels") or {})
        if interval:
            q = interval["quantiles"]
            levels.setdefault(f"{q[1] - q[0]:.2f}", interval["offsets"])
        result[name] = {
            "version": version.name,
            "family": card["family"],
            "card_metrics": card["metrics"],
            "selection": card.get("selection"),
            "calibration": {
                k: v for k, v in (card.get("calibration") or {}).items() if k != "reliability"
            },
            "ids": [int(r["id"]) for r in test],
            "y": task.label(test).tolist(),
            "score": predict(task, pipeline, test).tolist(),
            "budget_known": [r.get("budget") is not None for r in test],
            "levels": levels,
        }
    out.write_text(json.dumps(result), encoding="utf-8")
    print(f"wrote {out}")


def coverage(y: Array, pred: Array, known: npt.NDArray[np.bool_], offsets: Any) -> float:
    pooled = offsets["all"]
    lo = np.where(
        known, offsets.get("budget_known", pooled)[0], offsets.get("budget_unknown", pooled)[0]
    )
    hi = np.where(
        known, offsets.get("budget_known", pooled)[1], offsets.get("budget_unknown", pooled)[1]
    )
    return float(np.mean((pred + lo <= y) & (y <= pred + hi)))


def ece(y: Array, p: Array, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def card_coverage(metrics: dict[str, Any]) -> dict[str, float]:
    out = {
        level: float(metrics[f"interval_coverage_{level}"])
        for level in LEVELS
        if f"interval_coverage_{level}" in metrics
    }
    if "0.80" not in out and "interval_coverage" in metrics:
        out["0.80"] = float(metrics["interval_coverage"])  # today's cards: the 80% interval
    return out


def figures(side: dict[str, Any]) -> dict[str, Any]:
    rev, hit = side["revenue"], side["hit"]
    y, pred = np.asarray(rev["y"]), np.asarray(rev["score"])
    known = np.asarray(rev["budget_known"], dtype=bool)
    hy, hp = np.asarray(hit["y"]), np.asarray(hit["score"])
    return {
        "revenue_family": rev["family"],
        "hit_family": hit["family"],
        "rmsle": float(np.sqrt(np.mean((pred - y) ** 2))),
        # Coverage as each card measured it: offsets fitted without the test films (the
        # offsets the artifact serves were refitted with the test residuals too, so
        # recomputing coverage from them would flatter both models).
        "coverage": card_coverage(rev["card_metrics"]),
        "coverage_served_offsets": {
            level: coverage(y, pred, known, rev["levels"][level])
            for level in LEVELS
            if level in rev["levels"]
        },
        "roc_auc": float(roc_auc_score(hy, hp)),
        "brier": float(brier_score_loss(hy, hp)),
        "ece": ece(hy, hp),
    }


def bootstrap(base: dict[str, Any], new: dict[str, Any], rounds: int = 2000) -> dict[str, Any]:
    """Paired bootstrap over the test films (seeded): 95% interval of each change, so a
    difference of a few hundredths on ~400 films is read against its noise."""
    rng = np.random.default_rng(0)
    y = np.asarray(base["revenue"]["y"])
    pa, pb = np.asarray(base["revenue"]["score"]), np.asarray(new["revenue"]["score"])
    hy = np.asarray(base["hit"]["y"])
    ha, hb = np.asarray(base["hit"]["score"]), np.asarray(new["hit"]["score"])
    d_rmsle, d_auc = [], []
    for _ in range(rounds):
        i = rng.integers(0, len(y), len(y))
        d_rmsle.append(
            np.sqrt(np.mean((pb[i] - y[i]) ** 2)) - np.sqrt(np.mean((pa[i] - y[i]) ** 2))
        )
        j = rng.integers(0, len(hy), len(hy))
        if len(np.unique(hy[j])) == 2:
            d_auc.append(roc_auc_score(hy[j], hb[j]) - roc_auc_score(hy[j], ha[j]))
    return {
        "rmsle": (float(np.percentile(d_rmsle, 2.5)), float(np.percentile(d_rmsle, 97.5))),
        "roc_auc": (float(np.percentile(d_auc, 2.5)), float(np.percentile(d_auc, 97.5))),
    }


def compare(base_path: Path, new_path: Path, write: bool) -> None:
    base = json.loads(base_path.read_text(encoding="utf-8"))
    new = json.loads(new_path.read_text(encoding="utf-8"))
    for name in ("revenue", "hit"):
        if base[name]["ids"] != new[name]["ids"] or base[name]["y"] != new[name]["y"]:
            raise SystemExit(f"{name}: the two dumps hold different test films")
    a, b = figures(base), figures(new)
    ci = bootstrap(base, new)

    def cov(f: dict[str, Any], level: str) -> str:
        return f"{f['coverage'][level]:.3f}" if level in f["coverage"] else "n/a (not offered)"

    rows = [
        (
            "revenue RMSLE (lower is better)",
            f"{a['rmsle']:.4f}",
            f"{b['rmsle']:.4f}",
            f"{b['rmsle'] - a['rmsle']:+.4f} "
            f"(95% CI {ci['rmsle'][0]:+.3f} to {ci['rmsle'][1]:+.3f})",
            "<= -0.05",
        ),
        *[
            (
                f"revenue interval coverage {level} (nominal {float(level):.0%})",
                cov(a, level),
                cov(b, level),
                "",
                f"{float(level) - 0.03:.2f}-{float(level) + 0.03:.2f}",
            )
            for level in LEVELS
        ],
        (
            "hit ROC AUC (higher is better)",
            f"{a['roc_auc']:.4f}",
            f"{b['roc_auc']:.4f}",
            f"{b['roc_auc'] - a['roc_auc']:+.4f} (95% CI {ci['roc_auc'][0]:+.3f} to "
            f"{ci['roc_auc'][1]:+.3f})",
            ">= +0.03",
        ),
        (
            "hit Brier score (lower is better)",
            f"{a['brier']:.4f}",
            f"{b['brier']:.4f}",
            f"{b['brier'] - a['brier']:+.4f}",
            "",
        ),
        (
            "hit ECE, 10 bins (lower is better)",
            f"{a['ece']:.4f}",
            f"{b['ece']:.4f}",
            f"{b['ece'] - a['ece']:+.4f}",
            "<= 0.05",
        ),
    ]
    n_rev, n_hit = len(base["revenue"]["ids"]), len(base["hit"]["ids"])
    lines = [
        "## Models: today's (integ) against issue 14's (f-models), same test films",
        "",
        f"Time split of the 3,804 real train films (TMDB 5000 train CSV + IMDB 5000): the newest "
        f"15% are the test films, {n_rev} for revenue (known revenue) and {n_hit} for hit "
        "(known budget and revenue); the same ids in both dumps, checked. Each model was "
        "trained by its own code with `--no-refit` (fitted on train+validation, never on "
        "test), full (non-quick) selection. Coverage is each card's figure (interval offsets "
        "fitted without the test films). Changes with a 95% interval come from a paired "
        "bootstrap over the test films (2,000 rounds, seeded).",
        "",
        f"| figure | today ({a['revenue_family']} / {a['hit_family']}) | issue 14 "
        f"({b['revenue_family']} / {b['hit_family']}) | change | target |",
        "|---|---|---|---|---|",
        *[f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |" for r in rows],
    ]
    met = {
        "RMSLE at least 0.05 lower": b["rmsle"] - a["rmsle"] <= -0.05,
        "ROC AUC at least 0.03 higher": b["roc_auc"] - a["roc_auc"] >= 0.03,
        "coverage within 3 points at 50/80/95%": all(
            abs(b["coverage"].get(level, -1.0) - float(level)) <= 0.03 for level in LEVELS
        ),
        "ECE at most 0.05": b["ece"] <= 0.05,
    }
    for name in ("revenue", "hit"):
        selection = new[name].get("selection")
        if not selection:
            continue
        kept = [row["features"] for row in selection["ablation"][1:] if row["kept"]]
        dropped = [row["features"] for row in selection["ablation"][1:] if not row["kept"]]
        stack = selection.get("stacking") or {}
        calibration = new[name].get("calibration") or {}
        lines += [
            "",
            f"Issue 14's {name} selection (time-series CV on the development films): feature "
            f"groups kept {', '.join(kept) or 'none'}; dropped {', '.join(dropped) or 'none'}; "
            + (
                f"stacking {'+'.join(stack.get('members', []))} cv {stack.get('cv')} vs best "
                f"single {stack.get('best_single')} "
                f"({'kept' if stack.get('chosen') else 'not kept'})"
                if stack.get("tried")
                else "no stacking"
            )
            + _recency_text(selection.get("recency") or {})
            + (
                f"; calibration chosen on validation: {calibration.get('chosen')}"
                f"{' fitted on the latest fold' if calibration.get('window') == 'recent' else ''} "
                f"(validation Brier {calibration.get('validation_brier')})"
                if calibration
                else ""
            )
            + ".",
        ]
    lines += [
        "",
        "Issue 14's targets: "
        + "; ".join(f"{k}: {'met' if ok else 'NOT met'}" for k, ok in met.items())
        + ".",
        "",
        "Command (today's code exported with `git archive integ | tar -x -C /tmp/base`, both "
        "trained with this worktree's virtualenv):",
        "",
        "```",
        *COMMAND.strip("\n").splitlines(),
        "```",
    ]
    text = "\n".join(lines)
    print(text)
    if write:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench.common import write_section

        write_section("models", text)


def _recency_text(recency: dict[str, Any]) -> str:
    """The recency-weight trials of a selection, for the text under the table."""
    if not recency.get("tried"):
        return ""
    metric = recency.get("judged_by", "cv")
    tried = ", ".join(
        f"{t['half_life_years'] or 'none'}: {t.get(metric, t['cv'])}" for t in recency["tried"]
    )
    chosen = recency.get("half_life_years")
    return (
        f"; recency weights {'half-life ' + format(chosen, 'g') + ' years' if chosen else 'none'}"
        f" ({'cv' if metric == 'cv' else 'cv ' + metric} by half-life {tried})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--artifacts", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--csv", type=Path, default=DATA / "tmdb_5000_movies.train.csv")
    d.add_argument("--imdb-csv", type=Path, default=DATA / "imdb_5000_movie_metadata.csv")
    c = sub.add_parser("compare")
    c.add_argument("base", type=Path)
    c.add_argument("new", type=Path)
    c.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.cmd == "dump":
        dump(args.artifacts, args.out, args.csv, args.imdb_csv)
    else:
        compare(args.base, args.new, not args.no_write)


if __name__ == "__main__":
    main()
