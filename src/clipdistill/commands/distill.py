"""`clipdistill distill CONFIG.yaml`: train a student CLIP from a teacher; writes a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from clipdistill.commands._claim import claimed_out, train_ranks
from clipdistill.commands._options import config_argument, out_option, overrides_option, overwrite_option, resume_option


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_cmd(config: Path = config_argument("configs/cid.yaml"), set_: list[str] = overrides_option(),
                    out: Path = out_option(), resume: str | None = resume_option(),
                    overwrite: bool = overwrite_option()) -> None:
        """Distil a teacher CLIP into a student.

        Example: clipdistill distill configs/tinyclip.yaml --set data.source=world:world_tiny --set train.epochs=1 \\
            --out runs/tiny

        Several processes: torchrun --nproc_per_node 2 -m clipdistill distill CONFIG.yaml --out RUN.
        Continue a killed or preempted run with --resume latest. An --out that holds another run or other files
        is refused unless --resume or --overwrite says what to do. SIGTERM / SIGINT / SIGUSR1 finish the current
        optimizer step, write a checkpoint and exit 128+signal with the resume command.
        """
        from clipdistill.config import load_config
        from clipdistill.distill.config import DistillConfig
        from clipdistill.distill.run import run_distill

        cfg = load_config(DistillConfig, config, set_)
        with claimed_out(out, "distill", train_ranks(cfg.train), resume=resume is not None,
                         overwrite=overwrite) as info:
            written = run_distill(cfg, out, resume)
        if info.is_main:
            typer.echo(f"wrote {written}")
