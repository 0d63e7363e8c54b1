"""`clipdistill finetune CONFIG.yaml [--set key=value ...]`: one VL task student, with or without CLIP-TD."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clipdistill.commands._claim import claimed_out, train_ranks
from clipdistill.commands._options import config_argument, out_option, overrides_option, overwrite_option, resume_option


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(config: Path = config_argument("configs/td/finetune_tiny.yaml"),
                     out: Path | None = out_option(from_config=True), overrides: list[str] = overrides_option(),
                     resume: str | None = resume_option(), overwrite: bool = overwrite_option()) -> None:
        """Fine-tune a VL task student (VQA / SNLI-VE / VCR); `td.method` picks baseline, naive or clip_td.

        The task is read from `task.folder` (relative to `world` when set), e.g. the embedded world's tasks/vqa.

        Example: clipdistill finetune configs/td/finetune_tiny.yaml --set world=world_tiny --set td.method=baseline \\
            --out runs/ft

        An --out folder holding another run or other files is refused unless --resume or --overwrite says what to do.
        SIGTERM / SIGINT / SIGUSR1 finish the optimizer step, checkpoint, and exit 128+signal.
        """
        from functools import partial

        from clipdistill.config import load_config, with_out
        from clipdistill.td.runner import FinetuneConfig, run_finetune
        from clipdistill.train import fit

        cfg = with_out(load_config(FinetuneConfig, config, overrides), out)
        out = Path(cfg.out)
        same_model = partial(_same_model, out, cfg) if resume is not None else None
        with claimed_out(out, "finetune", train_ranks(cfg.train), resume=resume is not None, overwrite=overwrite,
                         check=same_model) as info:
            results = run_finetune(cfg, out, trainer=partial(fit, resume=resume), main=info.is_main)
        if info.is_main:
            typer.echo(json.dumps(results, indent=2))


RESUME_FIXED = ("task", "student", "teacher", "td")  # what a checkpoint's weights and data depend on


def _same_model(out: Path, cfg) -> None:
    """A resume must build what the run built: refuse a config whose task / student / teacher / td differ from
    the run's config.yaml, before run_finetune rewrites it."""
    import yaml

    from clipdistill.errors import UserError

    path = out / "config.yaml"
    if not path.is_file():
        return
    from clipdistill.td.runner import teacher_section

    old = yaml.safe_load(path.read_text()) or {}
    old["teacher"] = teacher_section(old.get("teacher"))  # a run recorded with the old `teacher: SPEC` spelling
    new = cfg.model_dump(mode="json")
    changed = [k for k in RESUME_FIXED if old.get(k) != new.get(k)]
    if changed:
        raise UserError(f"--resume: the config's {', '.join(changed)} differ from the run's {path}; resume with "
                        "that config (train.* may change), or start a new run in another --out")
