"""`clipdistill protocol CONFIG.yaml`: the low-shot / domain-shift / full CLIP-TD protocol, resumable."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipdistill.commands._claim import claimed_out, train_ranks
from clipdistill.commands._options import config_argument, out_option, overrides_option, overwrite_option

if TYPE_CHECKING:
    from clipdistill.runfolder import StopSignals


def register(app: typer.Typer) -> None:
    @app.command("protocol")
    def protocol_cmd(config: Path = config_argument("configs/td/protocol_tiny.yaml"),
                     out: Path | None = out_option("sweep folder", from_config=True),
                     overrides: list[str] = overrides_option(),
                     overwrite: bool = overwrite_option("start the sweep in --out again")) -> None:
        """Train and evaluate baseline / naive distillation / CLIP-TD for every task x regime x seed.

        Task data is read from each task's folder (relative ones under `world`). Finished cells are skipped on
        rerun; a cell stopped by SIGTERM / SIGINT / SIGUSR1 (checkpoint at its optimizer step, exit 128+signal)
        continues from that checkpoint. Writes OUT/rows.json, OUT/results.json / .md / .csv (with each cell's
        training-set size and score minus the answer prior) and OUT/summary.json; `budget` sets each cell's steps
        (per fraction), warmup share and body / head lr; `select` chooses options on each task's dev carve
        (OUT/selection.json), never on val.

        Example (one seed, one fraction, one epoch; without the --set lines the whole grid runs):
        clipdistill protocol configs/td/protocol_tiny.yaml --set world=world_tiny --out runs/td_tiny \\
            --set seeds=[0] --set fractions=[0.25] --set full=false --set train.epochs=1
        """
        from functools import partial

        from clipdistill.config import load_config, with_out
        from clipdistill.errors import UserError
        from clipdistill.runfolder import StopSignals
        from clipdistill.td.protocol import ProtocolConfig, run_protocol
        from clipdistill.train import fit
        from clipdistill.train.distributed import launched_world_size

        if launched_world_size() > 1:  # every rank would run the whole sweep, writing and pruning the same cells
            raise UserError("protocol runs its cells one after another in one process, not under torchrun; run "
                            "it as `clipdistill protocol ...`, or one cell under torchrun with `clipdistill "
                            "finetune`")
        cfg = with_out(load_config(ProtocolConfig, config, overrides), out)
        with (claimed_out(cfg.out, "protocol", train_ranks(cfg.train), overwrite=overwrite, continues=True),
              StopSignals() as stop):
            result = run_protocol(cfg, trainer=partial(fit, resume="latest"), progress=_cell_hook(cfg, stop))
        typer.echo((Path(cfg.out) / "results.md").read_text())
        gains = result["summary"]["gain_points"]
        if gains:
            typer.echo("CLIP-TD - baseline (points): " + ", ".join(f"{k}: {v:+.2f}" for k, v in gains.items()))


def _cell_hook(cfg, stop: StopSignals):
    """`run_protocol`'s progress callback, which it calls as each cell starts (`run REL` / `skip (done) REL`):
    there a stop signal received since the last cell ends the sweep (finished cells are on disk), and a cell
    about to run resumes its own checkpoints only when they were made by the same cell config."""
    from clipdistill.td.protocol import LOCATION_FIELDS, cell_configs, selection_cells

    out = Path(cfg.out)
    selecting = {rel: ft for rel, _, ft in selection_cells(cfg)}

    def progress(msg: str) -> None:
        verb, _, rel = msg.rpartition(" ")
        # listed again at each cell: with `select`, a method's cells take the variant chosen after the selection ran
        cells = {**selecting, **dict(cell_configs(cfg))}
        if rel in cells and stop.signum:
            raise stop.stop(f"before cell {rel}; finished cells are kept")
        if verb == "run" and rel in cells:
            _drop_stale_checkpoints(out / rel, cells[rel].model_dump(mode="json", exclude=LOCATION_FIELDS))
        typer.echo(msg)

    return progress


def _drop_stale_checkpoints(cell: Path, current: dict) -> None:
    """An unfinished cell's checkpoints made under another config (edited since) must not be resumed: removed,
    the cell trains from scratch. They are the toolkit's own partial output, never a finished result."""
    import yaml

    from clipdistill.td.protocol import LOCATION_FIELDS

    path = cell / "config.yaml"
    if not (cell / "checkpoints").is_dir() or not path.is_file():
        return
    old = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k not in LOCATION_FIELDS}
    if old != current:
        shutil.rmtree(cell / "checkpoints")
        for name in ("metrics.jsonl", "tb"):
            p = cell / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
