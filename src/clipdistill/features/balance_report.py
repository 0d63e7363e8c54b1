"""The balance report: kept fraction, cluster-size histograms before / after / random control, a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipdistill.features.balance import Balanced


def _stats(sizes: np.ndarray) -> dict:
    p = sizes[sizes > 0] / max(sizes.sum(), 1)
    entropy = float(-(p * np.log(p)).sum())
    return {"max": int(sizes.max()), "mean": float(sizes.mean()),
            "max_over_mean": float(sizes.max() / max(sizes.mean(), 1e-12)),
            "normalised_entropy": entropy / np.log(len(sizes)) if len(sizes) > 1 else 1.0,
            "empty_clusters": int((sizes == 0).sum())}


def build_report(result: Balanced, k: int, target: float | None, seed: int) -> dict:
    """report.json from `balance()`'s result; cluster sizes are those of the clustering de-duplicated in."""
    labels, kept = result.deduped.labels, result.kept
    n, n_kept = len(labels), int(kept.sum())
    # the obvious ablation: a random subset of the same size
    control = np.zeros(n, dtype=bool)
    control[np.random.default_rng(seed).choice(n, size=n_kept, replace=False)] = True
    sizes = {name: np.bincount(labels[mask], minlength=k)
             for name, mask in (("before", np.ones(n, bool)), ("after", kept), ("random_control", control))}
    edges = np.unique(np.geomspace(1, max(int(sizes["before"].max()), 1) + 1, num=16).astype(int))
    edges = np.concatenate([[0], edges])
    return {
        "samples": n, "kept": n_kept, "kept_fraction": n_kept / n, "target_keep": target,
        "target_met_within_1pct": None if target is None else abs(n_kept / n - target) <= 0.01 * target,
        "threshold": result.threshold, "cap": result.cap, "survivors_before_cap": result.survivors_before_cap,
        "perceptual_duplicates": result.perceptual_duplicates,
        "space": result.space, "kmeans_objective": result.deduped.objective, "faiss_gpu": result.gpu,
        "dedup_device": result.dedup_device or "cpu (numpy)",
        "cluster_size_stats": {name: _stats(s) for name, s in sizes.items()},
        # hist_before / hist_after: the keys `clipdistill report` reads a balance report by
        **{f"hist_{name}": {"edges": edges.tolist(), "counts": np.histogram(s, bins=edges)[0].tolist()}
           for name, s in sizes.items()},
        "cluster_sizes": {name: s.tolist() for name, s in sizes.items()},
        "timings_s": result.timings,
    }


def plot_report(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, style in (("before", "-"), ("after", "-"), ("random_control", "--")):
        sizes = np.sort(np.asarray(report["cluster_sizes"][name]))[::-1]
        left.plot(np.arange(1, len(sizes) + 1), np.maximum(sizes, 0.5), style, label=name.replace("_", " "))
    left.set(xlabel="cluster rank", ylabel="samples in cluster", yscale="log", title="cluster sizes, largest first")
    left.legend()
    edges = np.asarray(report["hist_before"]["edges"])
    width = np.diff(edges)
    for i, name in enumerate(("before", "after", "random_control")):
        right.bar(edges[:-1] + width * i / 3, report[f"hist_{name}"]["counts"], width=width / 3, align="edge",
                  label=name.replace("_", " "))
    right.set(xlabel="cluster size", ylabel="clusters", xscale="symlog", title="cluster-size histogram")
    right.legend()
    fig.suptitle(f"semantic balance (our CLIP-CID reconstruction): kept {report['kept']} of {report['samples']} "
                 f"({report['kept_fraction']:.1%})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
