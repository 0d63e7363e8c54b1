"""`clipdistill export`: a trained student as an open_clip folder or ONNX encoders."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        model: str = typer.Option(..., "--model", help="Model SPEC, e.g. run:runs/cid"),
        fmt: str = typer.Option("open_clip", "--format", help="open_clip | onnx"),
        out: Path = typer.Option(..., "--out", help="Output folder"),
    ) -> None:
        """Export a student others can load.

        Example: clipdistill export --model run:runs/tiny --format onnx --out exports/tiny-onnx

        open_clip: model, _, preprocess = open_clip.create_model_and_transforms("local-dir:OUT") and
        open_clip.get_tokenizer("local-dir:OUT").
        onnx: image_encoder.onnx + text_encoder.onnx (unnormalised features; preprocessing, tokenizer and
        logit scale in each file's metadata_props).
        """
        from clipdistill.errors import UserError
        from clipdistill.export import export_model
        from clipdistill.zoo import load_model

        if fmt not in ("open_clip", "onnx"):
            raise UserError(f"--format must be open_clip or onnx, got {fmt!r}")
        for path in export_model(load_model(model), fmt, out):  # type: ignore[arg-type]
            typer.echo(f"wrote {path}")
