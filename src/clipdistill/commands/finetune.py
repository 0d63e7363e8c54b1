"""`clipdistill finetune CONFIG.yaml [--set key=value ...]`: one VL task student, with or without CLIP-TD."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        config: Path = typer.Argument(..., help="YAML config (see configs/td/*.yaml)"),
        overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set td.lam=0.5"),
    ) -> None:
        """Fine-tune a VL task student (VQA / SNLI-VE / VCR); `td.method` picks baseline, naive or clip_td.

        The task is read from `task.folder` (relative to `world` when set), e.g. the embedded world's tasks/vqa.

        Example: clipdistill finetune configs/td/finetune_tiny.yaml --set world=world_tiny --set td.method=baseline \\
            --set out=runs/ft
        """
        from clipdistill.config import load_config
        from clipdistill.td.runner import FinetuneConfig, run_finetune
        from clipdistill.train.distributed import launched_as_main

        cfg = load_config(FinetuneConfig, config, overrides)
        results = run_finetune(cfg, Path(cfg.out))
        if launched_as_main():
            typer.echo(json.dumps(results, indent=2))
