"""`clipdistill protocol CONFIG.yaml`: the low-shot / domain-shift / full CLIP-TD protocol, resumable."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("protocol")
    def protocol_cmd(
        config: Path = typer.Argument(..., help="YAML config (see configs/td/protocol_tiny.yaml)"),
        overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set seeds=[0]"),
    ) -> None:
        """Train and evaluate baseline / naive distillation / CLIP-TD for every task x regime x seed.

        Finished cells are skipped on rerun. Writes OUT/rows.json, OUT/results.json and OUT/results.md.

        Example: clipdistill protocol configs/td/protocol_tiny.yaml --set out=runs/td_tiny
        """
        from clipdistill.config import load_config
        from clipdistill.td.protocol import ProtocolConfig, run_protocol

        cfg = load_config(ProtocolConfig, config, overrides)
        run_protocol(cfg, progress=typer.echo)
        typer.echo((Path(cfg.out) / "results.md").read_text())
