"""Where training numbers go: `metrics.jsonl`, TensorBoard (`tb/`) and progress (main rank only)."""

from __future__ import annotations

import json
from pathlib import Path

from clipdistill.progress import StageProgress


class MetricsLog:
    """Appends one JSON object per logged step; mirrors scalars to TensorBoard when enabled.

    `resume_step`: the step of the checkpoint a resumed run starts from. What the killed run logged after it
    is replayed, so those records are cut from `metrics.jsonl` (and a torn last line dropped), and the new
    TensorBoard events file carries purge_step, which makes readers drop the old files' later events."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if enabled and resume_step is not None:
            truncate_metrics(self.path, resume_step)
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None  # the checkpoint's own step stays
            self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step` (a resume replays the rest); atomic, so a kill here loses nothing."""
    if not path.is_file():
        return
    from clipdistill.manifest import atomic_write_text

    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the line a kill tore in half
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class ProgressBar:
    """Steps done / total with the latest loss terms and samples/s: rich's bar on a terminal, plain flushed
    lines when stdout is a log file (clipdistill.progress)."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.progress = StageProgress("train", total, start=start, enabled=enabled)

    def update(self, step: int, info: dict[str, float]) -> None:
        info = dict(info)
        rate = info.pop("samples/s", None)
        self.progress.update(step, info=info, rate=rate)

    def close(self) -> None:
        self.progress.close()
