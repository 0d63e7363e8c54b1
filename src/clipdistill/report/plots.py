"""PNG plots (matplotlib Agg, no display): training curves per loss term, balance histograms,
low-shot curves. Each function returns PNG bytes; `Figure` is used without pyplot so no global state
or GUI backend is involved."""

from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict
from typing import Any

from matplotlib.figure import Figure

NON_TERMS = {"step", "epoch", "time", "samples"}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def curve_terms(rows: list[dict[str, Any]]) -> list[str]:
    """Numeric keys other than step/epoch/time, in first-seen order."""
    terms: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in NON_TERMS and isinstance(v, int | float) and not isinstance(v, bool) and k not in terms:
                terms.append(k)
    return terms


def _by_step(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in step order; a step logged twice (a resumed run replays the steps after its checkpoint) keeps the
    later row's values, so the curve is the run's own, not a zigzag."""
    merged: dict[int, dict[str, Any]] = {}
    for r in rows:
        merged.setdefault(r["step"], {}).update(r)
    return [merged[s] for s in sorted(merged)]


def training_curves(name: str, rows: list[dict[str, Any]]) -> bytes | None:
    """One panel per logged term (losses have very different scales), value against step; the step axis starts
    at 0 so a run's first logged steps are not mistaken for its start."""
    rows = _by_step(rows)
    terms = curve_terms(rows)
    if not terms:
        return None
    cols = min(3, len(terms))
    nrows = math.ceil(len(terms) / cols)
    fig = Figure(figsize=(4 * cols, 2.8 * nrows), layout="constrained")
    for i, term in enumerate(terms):
        ax = fig.add_subplot(nrows, cols, i + 1)
        pts = [(r["step"], r[term]) for r in rows if isinstance(r.get(term), int | float)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"training curves: {name}")
    return _png(fig)


ROLE_COLOURS = {"teacher": "tab:gray", "baseline": "tab:orange"}
LABEL_CHARS = 90  # a SPEC with a long checkpoint path keeps its informative end


def metric_bars(groups: list[dict[str, Any]], columns: list[str]) -> bytes | None:
    """Teacher / baseline / students side by side on every metric column (percent); mean over seeds with a
    one-standard-deviation error bar where a model has several seeds' results (`tables.seed_groups`)."""
    if not groups or not columns:
        return None
    return _png(metric_bars_figure(groups, columns))


def metric_bars_figure(groups: list[dict[str, Any]], columns: list[str]) -> Figure:
    width = 0.8 / len(groups)
    fig = Figure(figsize=(max(7.0, 1.2 + 0.35 * len(groups) * len(columns)), 4.4 + 0.2 * len(groups)),
                 layout="constrained")
    ax = fig.add_subplot()
    students = iter(["tab:blue", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
                     "tab:cyan"] * 8)
    for i, g in enumerate(groups):
        xs, means, errs = [], [], []
        for j, c in enumerate(columns):
            vals = g["values"].get(c, [])
            if vals:
                xs.append(j - 0.4 + width * (i + 0.5))
                means.append(100 * statistics.fmean(vals))
                errs.append(100 * statistics.stdev(vals) if len(vals) > 1 else math.nan)  # one seed: no bar
        name = g["model"] if len(g["model"]) <= LABEL_CHARS else "..." + g["model"][-(LABEL_CHARS - 3):]
        label = f"{name} ({g['role']}" + (f", {g['n']} seeds)" if g["n"] > 1 else ")")
        colour = ROLE_COLOURS.get(g["role"]) or next(students)
        ax.bar(xs, means, width=width, yerr=errs, capsize=3, label=label,
               color=colour, edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(fontsize=7, loc="outside lower center", ncols=1)  # below: long SPECs would squeeze the axes
    ax.set_title("teacher, baseline and students per metric" + (" (error bars: std over seeds)"
                                                                 if any(g["n"] > 1 for g in groups) else ""))
    return fig


def _hist(h: Any) -> tuple[list[float], list[float]]:
    """(bin left edges, counts) from {"edges", "counts"} or a plain list of counts per bin."""
    if isinstance(h, dict):
        return [float(e) for e in h["edges"][: len(h["counts"])]], [float(c) for c in h["counts"]]
    return [float(i) for i in range(len(h))], [float(c) for c in h]


def balance_histogram(name: str, report: dict[str, Any]) -> bytes:
    """Cluster-size histogram before and after balancing, overlaid."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    for key, label, colour in (("hist_before", "before", "tab:gray"), ("hist_after", "after", "tab:blue")):
        x, y = _hist(report[key])
        width = (x[1] - x[0]) if len(x) > 1 else 1.0
        ax.bar(x, y, width=width, align="edge", alpha=0.6, label=label, color=colour)
    ax.set_xlabel(report.get("x_label", "cluster size"))
    ax.set_ylabel(report.get("y_label", "clusters"))
    kept = report.get("kept_fraction")
    ax.set_title(f"balance: {name}" + (f" (kept {kept:.1%})" if isinstance(kept, int | float) else ""))
    ax.legend()
    return _png(fig)


def lowshot_curves(rows: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """One plot per (task, metric): mean +- std over seeds against the training fraction, per method."""
    groups: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r.get("regime", "low_shot") not in ("low_shot", "full"):
            continue  # domain-shift rows have no fraction axis
        per_frac = groups[(r["task"], r["metric"])][r["method"]]
        per_frac.setdefault(float(r["fraction"]), []).append(float(r["value"]))
    plots = []
    for (task, metric), methods in sorted(groups.items()):
        fig = Figure(figsize=(5.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        for method, per_frac in sorted(methods.items()):
            fr = sorted(per_frac)
            means = [statistics.fmean(per_frac[f]) for f in fr]
            stds = [statistics.pstdev(per_frac[f]) for f in fr]
            ax.errorbar([f * 100 for f in fr], means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("training data (%)")
        ax.set_ylabel(metric)
        ax.set_title(f"low-shot: {task}")
        ax.grid(alpha=0.3)
        ax.legend()
        plots.append((f"{task} {metric}", _png(fig)))
    return plots
