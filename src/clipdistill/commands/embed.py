"""`clipdistill embed`: run a teacher once over a data source into a feature store (docs/features.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from clipdistill.commands._claim import claimed_out
from clipdistill.commands._options import overwrite_option


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        teacher: str = typer.Option(..., help="teacher SPEC, e.g. open_clip:cd-teacher-64 or hf:DIR"),
        data: str = typer.Option(
            ..., help="data SOURCE: world:DIR | pairs.csv | images:DIR | shards/{00000..00009}.tar | ..."),
        out: Path = typer.Option(..., help="store folder (a rerun into it finishes the missing shards)"),
        tokens: bool = typer.Option(False, help="also store per-token features (patch / text tokens + mask)"),
        augs: int = typer.Option(0, help="augmented views per image, stored with their replay parameters"),
        shard_size: int = typer.Option(1000, help="rows per store shard for map sources (tar: one per tar)"),
        batch_size: int = typer.Option(64, help="teacher batch size"),
        num_workers: int = typer.Option(0, help="decode worker processes per rank"),
        seed: int = typer.Option(0, help="seed of the augmentation parameters"),
        phash: bool = typer.Option(False, help="also store each image's perceptual hash (balance --perceptual)"),
        device: str = typer.Option("auto", help="auto | cpu | cuda"),
        image_col: str = typer.Option("image", help="CSV/JSONL column of image paths (open_clip's `filepath` is "
                                      "taken when `image` is absent)"),
        caption_col: str = typer.Option("caption", help="CSV/JSONL column of captions (open_clip's `title` is "
                                        "taken when `caption` is absent)"),
        separator: str = typer.Option("auto", help="CSV separator: auto (tab for .tsv and for a tab-separated "
                                      ".csv header, as open_clip writes them), tab, or one character"),
        max_pixels: int = typer.Option(89_478_485, help="skip larger images undecoded (`too_many_pixels`)"),
        max_caption_chars: int = typer.Option(2000, help="cut longer captions before tokenising "
                                              "(`caption_truncated`)"),
        overwrite: bool = overwrite_option("start the store in --out again"),
    ) -> None:
        """Normalised fp16 teacher image/text embeddings for every sample, in resumable shards + manifest.

        Example: clipdistill embed --teacher open_clip:cd-teacher-64 --data world:world_tiny --out feats --augs 2

        Several processes (shards split across ranks, same output as one process):
        torchrun --nproc_per_node 2 -m clipdistill embed --teacher SPEC --data SOURCE --out DIR

        SIGTERM / SIGINT / SIGUSR1 stop after the shard being written (exit 128+signal); rerun to finish.
        """
        from clipdistill.config import build_config
        from clipdistill.features.embed import EmbedOptions, embed_features
        from clipdistill.features.store import FeatureStore
        from clipdistill.train.distributed import init_distributed

        opts = build_config(EmbedOptions, dict(teacher=teacher, data=data, tokens=tokens, augs=augs,
                                               shard_size=shard_size, batch_size=batch_size,
                                               num_workers=num_workers, seed=seed, device=device,
                                               phash=phash, image_col=image_col, caption_col=caption_col,
                                               separator=separator, max_pixels=max_pixels,
                                               max_caption_chars=max_caption_chars), "options")
        with claimed_out(out, "embed", init_distributed(opts.device, opts.timeout_s), overwrite=overwrite,
                         continues=True) as info:
            embed_features(opts, out)
        if info.is_main:  # one summary per torchrun job
            store = FeatureStore(out)
            typer.echo(f"wrote {out}: {len(store)} samples, fields {store.fields}, "
                       f"skipped {store.manifest['counts']['skipped']} {store.manifest['skips']}")
