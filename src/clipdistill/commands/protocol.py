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

        Task data is read from each task's folder (relative ones under `world`). Finished cells are skipped on
        rerun. Writes OUT/rows.json, OUT/results.json, OUT/results.md and OUT/summary.json.

        Example: clipdistill protocol configs/td/protocol_tiny.yaml --set world=world_tiny --set out=runs/td_tiny
        """
        from clipdistill.config import load_config
        from clipdistill.td.protocol import ProtocolConfig, run_protocol

        cfg = load_config(ProtocolConfig, config, overrides)
        result = run_protocol(cfg, progress=typer.echo)
        typer.echo((Path(cfg.out) / "results.md").read_text())
        gains = result["summary"]["gain_points"]
        if gains:
            typer.echo("CLIP-TD - baseline (points): " + ", ".join(f"{k}: {v:+.2f}" for k, v in gains.items()))
