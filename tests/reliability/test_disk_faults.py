"""A disk that fails mid-write (simulated: the write puts some bytes down, then raises ENOSPC)."""

from __future__ import annotations

import errno
import os

from rel_cases import case
from rel_helpers import run_main, tiny_distill_config

from clipdistill.safeload import load_tensors
from clipdistill.train import checkpoint


def failing_on(n: int, original):
    """A `torch.save` whose n-th write of `state.pt` leaves a partial file and raises ENOSPC."""
    calls = [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            with open(f, "wb") as fh:
                fh.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return original(obj, f, *args, **kwargs)

    return save


@case("disk", "the disk fills up while `distill` writes its 2nd checkpoint",
      "`error:` naming the checkpoint, the OS error and the last good checkpoint (exit 2, no traceback); "
      "the partial write is removed; the previous checkpoint still loads")
def test_checkpoint_write_fails(tmp_path, pairs, monkeypatch):
    monkeypatch.setattr(checkpoint.torch, "save", failing_on(2, checkpoint.torch.save))
    run = tmp_path / "run"
    code, out = run_main("distill", tiny_distill_config(tmp_path / "c.yaml", str(pairs)), "--out", str(run))
    assert code == 2 and "Traceback" not in out, out
    assert "could not write checkpoint step_0000004" in out and "No space left on device" in out
    assert "step_0000002" in out and "--resume latest" in out
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == ["step_0000002"]  # no temp folder, no torn step_0000004
    assert load_tensors(run / "checkpoints" / "step_0000002" / "model.safetensors")
    assert not (run / "model.safetensors").exists()  # the run did not pretend to finish


@case("disk", "the disk fills up where no writer of its own catches it (inside a `world` build)",
      "`error:` with the OS error, the path and what to rerun (exit 2, no traceback)")
def test_full_disk_anywhere_is_a_clear_error(tmp_path, monkeypatch):
    import clipdistill.world

    def full(out, size, seed, dup_rate=None):  # the signature of build_world
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "pairs.csv"))

    monkeypatch.setattr(clipdistill.world, "build_world", full)
    code, out = run_main("world", "--out", str(tmp_path / "w"), "--size", "tiny")
    assert code == 2 and "Traceback" not in out, out
    assert "No space left on device while writing" in out and "pairs.csv" in out and "rerun the same command" in out
