"""Where training numbers go: `metrics.jsonl`, TensorBoard (`tb/`) and a rich progress bar (main rank only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


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
    """Steps done / total with the latest loss terms and samples/s; silent when stdout is not a TTY."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.progress = None
        if enabled and sys.stdout.isatty():
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.task = self.progress.add_task("train", total=total, completed=start, info="")
            self.progress.start()

    def update(self, step: int, info: dict[str, float]) -> None:
        if self.progress is not None:
            text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            self.progress.update(self.task, completed=step, info=text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
