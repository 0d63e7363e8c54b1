"""`clipdistill models list` / `models info SPEC`: the model zoo."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="The model zoo: architectures, parameters, embed dims.", no_args_is_help=True)
    app.add_typer(models, name="models")

    @models.command("list")
    def list_cmd(
        all_open_clip: bool = typer.Option(False, "--all", help="Also list every open_clip architecture name."),
    ) -> None:
        """List shipped architectures (and with --all, open_clip's). Example: clipdistill models list"""
        import open_clip

        from clipdistill.zoo import read_arch_config, shipped_archs

        table = Table(title="clipdistill architectures (use as open_clip:NAME)")
        for col in ("name", "image px", "patch", "vision width x layers", "text width x layers", "embed dim"):
            table.add_column(col, no_wrap=col == "name")
        for name in shipped_archs():
            cfg = read_arch_config(name)[1]
            v, t = cfg["vision_cfg"], cfg["text_cfg"]
            layers = v["layers"]  # a list of stage depths for open_clip's ModifiedResNet towers
            if isinstance(layers, int):
                vision = f"{v['width']} x {layers}"
            else:
                vision = f"ResNet {v['width']} x {'-'.join(map(str, layers))}"
            table.add_row(name, str(v["image_size"]), str(v.get("patch_size", "-")), vision,
                          f"{t['width']} x {t['layers']}", str(cfg["embed_dim"]))
        Console().print(table)
        if all_open_clip:
            typer.echo("open_clip architectures: " + ", ".join(open_clip.list_models()))
        typer.echo("SPEC forms: open_clip:ARCH | open_clip:ARCH@CHECKPOINT | open_clip:ARCH@TAG | "
                   "open_clip:hf-hub:ORG/NAME | hf:DIR | hf:ORG/NAME | run:DIR")

    @models.command("info")
    def info_cmd(
        spec: str = typer.Argument(..., help="Model SPEC, e.g. open_clip:cd-student-s-32, hf:./my-clip or "
                                   "open_clip:ViT-B-32@laion2b_s34b_b79k"),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Load SPEC and print its parameters, embed dim, resolution and normalisation.

        Example: clipdistill models info open_clip:cd-teacher-64
        """
        from clipdistill.zoo import load_model

        info = load_model(spec).describe()
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        table = Table(title=escape(spec), show_header=False)  # SPECs and values are not rich markup
        for key, value in info.items():
            table.add_row(key, escape(json.dumps(value) if isinstance(value, dict | list) else str(value)))
        Console().print(table)

    @models.command("download")
    def download_cmd(
        spec: str = typer.Argument(..., help="open_clip:ARCH@TAG, open_clip:hf-hub:ORG/NAME or hf:ORG/NAME"),
    ) -> None:
        """Fill the Hugging Face cache (HF_HOME / HF_HUB_CACHE) with the weights SPEC names, on a connected
        machine; copy that cache folder to offline machines and load with HF_HUB_OFFLINE=1.

        Example: clipdistill models download open_clip:ViT-B-32@laion2b_s34b_b79k
        """
        from clipdistill.zoo import download_model

        for path in download_model(spec):
            typer.echo(f"cached {path}")
