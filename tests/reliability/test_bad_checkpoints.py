"""Checkpoints that do not fit, or that carry pickled code: refused, and no code from them ever runs."""

from __future__ import annotations

import torch
from rel_cases import case
from rel_helpers import run_main, tiny_distill_config
from safetensors.torch import save_file

from clipdistill.zoo import load_model


class Payload:
    """Unpickling this runs `touch MARKER` (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@case("ckpt", "`open_clip:ARCH@FILE` with weights of another architecture",
      "`error: ... weights for another architecture (<first key>: <shapes>)` (exit 2, no traceback)")
def test_checkpoint_for_other_architecture(tmp_path):
    small = load_model("open_clip:cd-student-xs-32")
    path = tmp_path / "xs.safetensors"
    save_file({k: v.contiguous() for k, v in small.inner.state_dict().items()}, str(path))
    code, out = run_main("models", "info", f"open_clip:cd-student-s-32@{path}")
    assert code == 2 and "weights for another architecture" in out and "Traceback" not in out, out


@case("ckpt", "a `.pt` checkpoint whose pickle runs `os.system` when loaded (as a model and as `--resume` "
      "state)", "refused before the object is built (`UnsafeCheckpointError`, exit 2); the command never runs")
def test_checkpoint_with_pickled_code(tmp_path, pairs):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload(marker)}, evil)
    code, out = run_main("models", "info", f"open_clip:cd-student-xs-32@{evil}")
    assert code == 2 and "refused to load" in out and "Nothing from it was executed" in out, out

    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs), steps=2)
    assert run_main("distill", cfg, "--out", str(tmp_path / "run"))[0] == 0
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000002"  # a real checkpoint, its state.pt poisoned
    torch.save({"step": 2, "x": Payload(marker)}, ckpt / "state.pt")
    code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"), "--resume", "latest")
    assert code == 2 and "state.pt: refused to load" in out and "Traceback" not in out, out
    assert not marker.exists()
