"""`clipdistill distill CONFIG.yaml`: train a student CLIP from a teacher; writes a run folder."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_cmd(
        config: Path = typer.Argument(..., help="YAML config, e.g. configs/cid.yaml"),
        set_: list[str] = typer.Option([], "--set", help="override a key, e.g. --set train.lr=1e-3 (repeatable)"),
        out: Path = typer.Option(..., "--out", help="run folder"),
        resume: str | None = typer.Option(None, "--resume", help="'latest' or a checkpoint folder"),
    ) -> None:
        """Distil a teacher CLIP into a student.

        Example: clipdistill distill configs/tinyclip.yaml --set data.source=world:world_tiny --out runs/tiny

        Several processes: torchrun --nproc_per_node 2 -m clipdistill distill CONFIG.yaml --out RUN.
        Continue a killed run with --resume latest.
        """
        from clipdistill.config import load_config
        from clipdistill.distill.config import DistillConfig
        from clipdistill.distill.run import run_distill
        from clipdistill.train.distributed import launched_as_main

        cfg = load_config(DistillConfig, config, set_)
        written = run_distill(cfg, out, resume)
        if launched_as_main():
            typer.echo(f"wrote {written}")
