"""Picture galleries for the report: what semantic balance removed (and why), and what CLIP-TD distilled.

Balance: a few clusters, each dropped sample beside the kept sample it is most similar to, with that cosine in the
de-dup space (the reason it counts redundant: at or above the solved threshold; a dropped sample below it went to
the cluster cap or to the perceptual pass). Read from the balance DIR, its feature store and its data source, as
the manifests name them; when they have moved the gallery is left out with a note, never an error.

CLIP-TD: the `td_samples.json` a finetune writes (td/samples.py): the student's view with the selected patch tokens
outlined, the text tokens with the selected ones highlighted, and the instance weight.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

WINDOW = 4096  # store rows looked at: the first ones, so the source is read only that far
CLUSTERS = 4
PAIRS = 3


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def redundancy_pairs(vectors: np.ndarray, labels: np.ndarray, kept: np.ndarray, clusters: int = CLUSTERS,
                     pairs: int = PAIRS) -> list[dict[str, Any]]:
    """[{"cluster", "pairs": [(dropped row, nearest kept row, cosine)], "kept", "dropped"}] for the clusters (among
    `vectors`' rows) with the most dropped members; within a cluster, the most similar pairs first."""
    vectors = _unit(vectors)
    out = []
    for c in np.unique(labels):
        members = np.nonzero(labels == c)[0]
        k, d = members[kept[members]], members[~kept[members]]
        if len(k) == 0 or len(d) == 0:
            continue
        sims = vectors[d] @ vectors[k].T
        best = sims.argmax(1)
        found = sorted(((int(d[i]), int(k[best[i]]), float(sims[i, best[i]])) for i in range(len(d))),
                       key=lambda p: -p[2])
        out.append({"cluster": int(c), "kept": len(k), "dropped": len(d), "pairs": found[:pairs]})
    out.sort(key=lambda g: (-g["dropped"], g["cluster"]))
    return out[:clusters]


def _resolve(path: str, near: Path) -> Path | None:
    """A path as the manifest recorded it (often relative to where the stage ran): as given, else from `near`."""
    for p in (Path(path), near / path):
        if p.exists():
            return p
    return None


def _images(spec: str, keys: set[str], near: Path, options: dict | None = None) -> dict[str, Any]:
    """PIL images of `keys` from the data source opened as embed opened it (`options`: columns, separator,
    limits, which shape the keys), reading at most WINDOW + a margin samples."""
    from clipdistill.data import open_source

    kind, _, rest = spec.partition(":")
    if kind in ("world", "imagefolder", "images") and rest and not Path(rest).exists():
        found = _resolve(rest, near)
        spec = f"{kind}:{found}" if found else spec
    elif not kind or "/" in kind:  # a plain path (csv, jsonl, shards)
        found = _resolve(spec, near)
        spec = str(found) if found and "{" not in spec else spec
    got: dict[str, Any] = {}
    for n, sample in enumerate(open_source(spec, **(options or {}))):
        if sample.key in keys:
            got[sample.key] = sample.image.convert("RGB")
            if len(got) == len(keys):
                break
        if n > 2 * WINDOW:
            break
    return got


def balance_gallery(balance_dir: Path) -> tuple[bytes | None, str]:
    """(PNG or None, note): dropped-vs-nearest-kept pairs of a few clusters of one balance DIR."""
    from clipdistill.features.store import FeatureStore

    try:
        manifest = json.loads((balance_dir / "manifest.json").read_text())
        store_dir = _resolve(manifest["features"], balance_dir.parent)
        if store_dir is None:
            return None, f"feature store {manifest['features']} not found"
        store = FeatureStore(store_dir)
        n = min(len(store), WINDOW)
        labels = np.load(balance_dir / "labels.npy")[:n]
        kept = np.load(balance_dir / "kept.npy")[:n]
        space = manifest.get("options", {}).get("space", "image")
        rows = np.arange(n)
        vectors = _unit(store.rows("image", rows))
        if space == "multimodal":  # UNICOM's joint vector, as balance de-duplicated them
            vectors = vectors + _unit(store.rows("text", rows))
        groups = redundancy_pairs(vectors, labels, kept)
        if not groups:
            return None, "no cluster among the first samples has both kept and dropped members"
        keys = store.keys
        wanted = {keys[r] for g in groups for d, k, _ in g["pairs"] for r in (d, k)}
        images = _images(manifest["source"]["spec"], wanted, balance_dir.parent, manifest["source"].get("options"))
    except Exception as e:  # noqa: BLE001  a gallery is an extra: any failure leaves it out, with the reason
        return None, f"gallery left out ({type(e).__name__}: {e})"
    if len(images) < len(wanted):
        return None, (f"gallery left out: {len(wanted) - len(images)} of its images are not in "
                      f"{manifest['source']['spec']}")
    threshold = manifest.get("solved", {}).get("threshold")
    fig = Figure(figsize=(2.0 * 2 * PAIRS, 2.3 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 2 * PAIRS, squeeze=False)
    for row, g in zip(axes, groups, strict=True):
        for ax in row:
            ax.axis("off")
        for j, (d, k, sim) in enumerate(g["pairs"]):
            row[2 * j].imshow(images[keys[k]])
            row[2 * j].set_title(f"kept\n{keys[k]}", fontsize=7, color="tab:green")
            row[2 * j + 1].imshow(images[keys[d]])
            why = "" if threshold is None else (" >= thr" if sim >= threshold else " < thr (cap)")
            row[2 * j + 1].set_title(f"dropped, cos {sim:.4f}{why}\n{keys[d]}", fontsize=7, color="tab:red")
        row[0].text(-0.15, 0.5, f"cluster {g['cluster']}\n{g['kept']} kept\n{g['dropped']} dropped",
                    transform=row[0].transAxes, ha="right", va="center", fontsize=8)
    thr = "" if threshold is None else f"; de-dup threshold {threshold:.4f}"
    fig.suptitle(f"balance {balance_dir.name}: dropped samples beside their most similar kept one ({space} "
                 f"cosine{thr})", fontsize=9)
    return _png(fig), ""


def td_run_label(path: Path) -> str:
    """A protocol cell by its place in the grid (task/fraction-seed/method), a lone fine-tune by its folder."""
    parts = path.parent.parts
    return "/".join(parts[parts.index("cells") + 1:]) if "cells" in parts[:-1] else path.parent.name


def td_sample_figure(path: Path, limit: int = 4) -> bytes | None:
    """Selected patch tokens outlined on the student's view, selected text tokens highlighted, instance weight."""
    from PIL import Image

    data = json.loads(path.read_text())
    samples = data.get("samples", [])[:limit]
    if not samples:
        return None
    fig = Figure(figsize=(9, 2.4 * len(samples)), layout="constrained")
    axes = fig.subplots(len(samples), 2, squeeze=False, width_ratios=[1, 2.6])
    for (ax_img, ax_txt), s in zip(axes, samples, strict=True):
        img = Image.open(path.parent / s["image"]).convert("RGB")
        size, grid = img.width, data["grid"]
        arr = np.asarray(img, dtype=np.float32) / 255
        ax_img.imshow(arr * (0.35 + 0.65 * _patch_mask(s["patches"], grid, size)[..., None]))  # others dimmed
        cell = size / grid
        for p in s["patches"]:
            r, c = divmod(p, grid)
            ax_img.add_patch(_rect(c * cell, r * cell, cell))
        ax_img.set_title(f"{len(s['patches'])}/{grid * grid} patches", fontsize=8)
        ax_img.axis("off")
        ax_txt.axis("off")
        x, y = 0.0, 0.8
        for tok, sel in zip(s["tokens"], s["selected"], strict=True):
            ax_txt.text(x, y, tok, fontsize=9, transform=ax_txt.transAxes, va="center",
                        bbox={"facecolor": "gold" if sel else "white", "edgecolor": "none", "pad": 1.5})
            x += 0.012 * (len(tok) + 2)
            if x > 0.95:
                x, y = 0.0, y - 0.18
        ax_txt.text(0.0, 0.05, f"{s.get('task', '')}  instance weight {s['weight']:.3f}  teacher p(gt) "
                    f"{s['teacher_prob']:.3f}  ({'right' if s['teacher_correct'] else 'wrong'})", fontsize=8,
                    transform=ax_txt.transAxes)
    fig.suptitle(f"CLIP-TD token selection and instance weights: {td_run_label(path)} ({data.get('selection', '')})",
                 fontsize=9)
    return _png(fig)


def _patch_mask(patches: list[int], grid: int, size: int) -> np.ndarray:
    m = np.zeros((grid, grid), dtype=np.float32)
    for p in patches:
        m[divmod(p, grid)] = 1.0
    reps = int(np.ceil(size / grid))
    return np.kron(m, np.ones((reps, reps), dtype=np.float32))[:size, :size]


def _rect(x: float, y: float, w: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), w, w, fill=False, edgecolor="gold", linewidth=1.2)
