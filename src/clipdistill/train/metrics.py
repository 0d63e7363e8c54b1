"""Where training numbers go: `metrics.jsonl`, TensorBoard (`tb/`) and progress (main rank only)."""

from __future__ import annotations

import json
from pathlib import Path

from clipdistill.progress import StageProgress


class MetricsLog:
    """Appends one JSON object per logged step; mirrors scalars to TensorBoard when enabled."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tb"))

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
