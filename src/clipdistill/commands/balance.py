"""`clipdistill balance`: our reconstruction of CLIP-CID's image semantic balance (docs/features.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from clipdistill.commands._claim import claimed_out
from clipdistill.commands._options import overwrite_option


def register(app: typer.Typer) -> None:
    @app.command("balance")
    def balance(
        features: Path = typer.Option(..., help="feature store made by `clipdistill embed`"),
        out: Path = typer.Option(..., help="output folder (kept keys, labels, centroids, report, plot)"),
        clusters: int = typer.Option(..., help="K, number of spherical k-means clusters"),
        target_keep: float | None = typer.Option(None, help="kept fraction to solve for (CLIP-CID kept 0.563)"),
        threshold: float | None = typer.Option(None, help="cosine above which a member duplicates a kept one "
                                               "(default 0.95; solved with --target-keep when needed)"),
        cap: int | None = typer.Option(None, help="most members kept per cluster (solved with --target-keep)"),
        perceptual: int | None = typer.Option(None, help="first drop pictures whose pHash is within this many "
                                              "bits of one kept before them in their cluster (needs embed --phash; "
                                              "0: identical hashes only)"),
        space: str = typer.Option("image", help="vectors clustered and de-duplicated: image | multimodal "
                                  "(norm(norm(img)+norm(txt)), UNICOM's joint features)"),
        order: str = typer.Option("store", help="de-dup walk: store | far (farthest from centroid first)"),
        labels: str = typer.Option("image", help="cluster labels for the cluster loss: image | multimodal "
                                   "(k-means on norm(norm(img)+norm(txt)))"),
        train_points: int = typer.Option(64, help="k-means trains on this many random points per centroid"),
        niter: int = typer.Option(20, help="k-means iterations"),
        seed: int = typer.Option(0, help="k-means / random-control seed"),
        device: str = typer.Option("auto", help="auto | cpu | cuda: k-means (faiss GPU) and the de-dup's "
                                   "similarity blocks (torch) on CUDA when visible (auto) or always (cuda)"),
        timeout_s: float = typer.Option(1800.0, help="under torchrun: how long a rank waits for the others"),
        teacher: str | None = typer.Option(None, help="refuse a store made by another teacher SPEC"),
        data: str | None = typer.Option(None, help="refuse a store made from another data SOURCE"),
        overwrite: bool = overwrite_option("replace the balance output in --out"),
    ) -> None:
        """Cluster teacher image embeddings, drop near-duplicates per cluster, cap large clusters.

        OUR RECONSTRUCTION of CLIP-CID's image semantic balance: the paper only reports keeping 56.3% of
        LAION-400M; k-means + greedy de-dup + cap and every threshold here are our choices
        (docs/reconstruction.md#cid-balance).

        Under torchrun (`torchrun --nproc_per_node N -m clipdistill balance ...`) the ranks share the k-means
        assignment and the de-dup by clusters; rank 0 writes --out (docs/scale_out.md#balance-at-scale).

        Example: clipdistill balance --features feats --out bal --clusters 16 --target-keep 0.563
        """
        from clipdistill.config import build_config
        from clipdistill.features.balance import BalanceOptions, join_ranks, run_balance

        opts = build_config(BalanceOptions, dict(clusters=clusters, target_keep=target_keep, threshold=threshold,
                                                 cap=cap, perceptual=perceptual, space=space, order=order,
                                                 labels=labels, train_points=train_points, niter=niter, seed=seed,
                                                 device=device, timeout_s=timeout_s), "options")
        fingerprint = None
        if data is not None:
            from clipdistill.data import open_source
            from clipdistill.features.store import FeatureStore

            # opened as embed opened it (columns, separator): those shape the keys the fingerprint covers
            how = FeatureStore(features).manifest["source"].get("options", {})
            fingerprint = open_source(data, **how).fingerprint()
        # before any computing: a bad --out fails at once, on every rank alike
        with claimed_out(out, "balance", join_ranks(opts), overwrite=overwrite):
            r = run_balance(features, out, opts, teacher=teacher, fingerprint=fingerprint)
        if r is None:  # a torchrun rank > 0: rank 0 speaks for the run
            return
        dups = "" if r["perceptual_duplicates"] is None else f"{r['perceptual_duplicates']} perceptual duplicates, "
        typer.echo(f"kept {r['kept']} of {r['samples']} ({r['kept_fraction']:.1%}; {dups}threshold "
                   f"{r['threshold']:.4f}, cap {r['cap']}) -> {out}/kept_keys.txt, labels.npy, centroids.npy, "
                   "report.json, clusters.png")
