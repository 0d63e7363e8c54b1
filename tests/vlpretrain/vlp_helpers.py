"""Config and CLI helpers for the vlpretrain tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).parents[2]


def tiny_config(path: Path, source: str, **sections) -> Path:
    """A one-layer 32-wide ViLT on 32 px images: seconds per run on one CPU thread."""
    cfg = {"student": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "image_size": 32, "patch_size": 8},
           "tokenizer": {"vocab_size": 200},
           "data": {"source": source, "batch_size": 16},
           "objectives": {"itc": {"weight": 0.5}, "mlm": {"attribute_share": 0.5}},
           "probe": {"samples": 40},
           "train": {"steps": 6, "lr": 1e-3, "save_every": 2, "progress": False, "tensorboard": False,
                     "device": "cpu", "threads": 1, "warmup_steps": 1}}
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str, script: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    head = [str(script)] if script else ["-m", "clipdistill"]
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
