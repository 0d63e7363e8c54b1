"""`clipdistill vlpretrain CONFIG.yaml`: pretrain a ViLT student on image-caption pairs; writes a run folder
with a Hugging Face ViLT folder in it (RUN/hf)."""

from __future__ import annotations

from pathlib import Path

import typer

from clipdistill.commands._claim import claimed_out, train_ranks
from clipdistill.commands._options import config_argument, out_option, overrides_option, overwrite_option, resume_option


def register(app: typer.Typer) -> None:
    @app.command("vlpretrain")
    def vlpretrain_cmd(config: Path = config_argument("configs/vlpretrain.yaml"), set_: list[str] = overrides_option(),
                       out: Path = out_option(), resume: str | None = resume_option(),
                       overwrite: bool = overwrite_option()) -> None:
        """Pretrain a vision-language (ViLT) student: image-text matching with hard negatives, whole-word masked
        language modelling, optionally image-text contrastive.

        Example: clipdistill vlpretrain configs/vlpretrain.yaml --set data.source=world:world_tiny \\
            --set train.epochs=1 --set probe.samples=40 --out runs/vlpre

        student.init: SPEC starts the ViLT's transformer from a CLIP's ViT image tower, as ViLT starts from a ViT
        (exact for open_clip towers built with no_ln_pre, e.g. open_clip:cd-student-s-32-vilt; preset
        configs/vlpretrain_init.yaml).

        Writes RUN/hf (transformers.ViltModel.from_pretrained loads it; tokenizer and ViltImageProcessor inside)
        and RUN/probes.json (masked-word accuracy per attribute type vs its majority share, ITM accuracy on
        held-out pairs). Several processes: torchrun --nproc_per_node 2 -m clipdistill vlpretrain CONFIG --out RUN.
        Continue a killed run with --resume latest.
        """
        from clipdistill.config import load_config
        from clipdistill.vlpretrain.config import VLPretrainConfig
        from clipdistill.vlpretrain.run import HF_DIR, PROBES, probe_table, run_vlpretrain

        cfg = load_config(VLPretrainConfig, config, set_)
        with claimed_out(out, "vlpretrain", train_ranks(cfg.train), resume=resume is not None,
                         overwrite=overwrite) as info:
            written = run_vlpretrain(cfg, out, resume)
        if info.is_main:
            import json

            typer.echo(probe_table(json.loads((written / PROBES).read_text())["metrics"]))
            typer.echo(f"wrote {written / HF_DIR} (Hugging Face ViLT folder) and {written / PROBES}")
