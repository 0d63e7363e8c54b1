"""`clipdistill demo`: the whole toolkit on the embedded world, one command."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("runs/demo"), help="Folder for every stage's output (reused on rerun)."),
        size: str = typer.Option("small", help="small (make demo, < 15 min on 2 cores) or tiny (a smoke run)."),
        teacher: str = typer.Option(None, help="Use this teacher SPEC instead of training the stand-in, e.g. "
                                    "hf:/models/clip-vit-b-32 or open_clip:ViT-B-32@/ckpt/epoch_32.pt"),
        data: str = typer.Option(None, help="Use these image-text pairs instead of the world's, e.g. "
                                 "'/data/laion/{00000..00127}.tar' or pairs.csv (zero-shot sets stay the world's)."),
        force: bool = typer.Option(False, help="Rerun every stage even when its output is reusable (the world, "
                                   "the same bytes for the same command, is kept)."),
    ) -> None:
        """Run world -> teacher -> embed -> balance -> distill -> eval -> CLIP-TD -> report.

        Every stage prints the clipdistill command it runs, so each can be rerun alone or pointed at real
        data: --data for LAION-style shards or a CSV, --teacher for a real CLIP (hf:DIR, open_clip:ARCH@CKPT).
        For real VQA v2 / SNLI-VE / VCR, run `clipdistill protocol` with a config naming their files.

        Example: clipdistill demo --out runs/demo
        """
        from clipdistill.demo import run_demo

        run_demo(out, size=size, teacher=teacher, data=data, force=force)
