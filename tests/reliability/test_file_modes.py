"""Weights written into a shared results folder get the mode every other file of the user gets."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

from rel_cases import case
from rel_helpers import run_main, tiny_distill_config
from torch import nn

from clipdistill.td.runner import export_task_model

UMASK = 0o027  # not the usual 022: the modes must follow the umask, not a constant


@case("folder", "weights written under a group-readable umask (safetensors itself creates files `-rw-------`): "
      "distill checkpoints, the `run:` student, a fine-tune's task model",
      "each weight file is `0o666 & ~umask` (here `-rw-r-----`), written atomically, like every other file")
def test_weight_files_follow_the_umask(tmp_path, pairs):
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs))
    old = os.umask(UMASK)
    try:
        code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"))
        task = SimpleNamespace(export_modules=lambda: {"head": nn.Linear(3, 2)})
        (tmp_path / "ft").mkdir()
        task_model = export_task_model(task, tmp_path / "ft", {"kind": "test"})
    finally:
        os.umask(old)
    assert code == 0, out
    weights = sorted((tmp_path / "run" / "checkpoints").glob("step_*/model.safetensors"))
    assert len(weights) == 2, weights  # 4 steps, saved every 2
    for path in [*weights, tmp_path / "run" / "model.safetensors", task_model]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~UMASK == 0o640, path
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp" in p.name]  # no temp file left behind
