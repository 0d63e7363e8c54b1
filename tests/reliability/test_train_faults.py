"""Faults inside training: a NaN loss, and a DDP peer that dies."""

from __future__ import annotations

import torch
from rel_cases import case
from rel_helpers import ddp_resume_worker, run_main, tiny_distill_config
from toy import ToyTask, make_factory, weights

from clipdistill.distill.task import DistillTask
from clipdistill.train import TrainConfig, fit
from clipdistill.train.checkpoint import list_checkpoints
from ddp_helpers import spawn_ranks


@case("train", "NaN injected into the distillation loss at the 3rd step",
      "`error: non-finite loss at step 2 ... {per-term values}. Stopped; last good checkpoint: .../step_0000002` "
      "(exit 2); that checkpoint stays loadable for `--resume`")
def test_nan_loss_stops_with_last_good_checkpoint(tmp_path, pairs, monkeypatch):
    step, calls = DistillTask.training_step, [0]

    def poisoned(self, batch):
        calls[0] += 1
        out = step(self, batch)
        return {**out, "loss": out["loss"] * float("nan")} if calls[0] == 3 else out

    monkeypatch.setattr(DistillTask, "training_step", poisoned)
    run = tmp_path / "run"
    code, out = run_main("distill", tiny_distill_config(tmp_path / "c.yaml", str(pairs)), "--out", str(run))
    assert code == 2 and "Traceback" not in out, out
    assert "non-finite loss at step 2" in out and "last good checkpoint" in out and "step_0000002" in out
    assert [p.name for p in list_checkpoints(run)] == ["step_0000002"]
    assert not (run / "model.safetensors").exists()


def spawn_two(tmp_path, die_at_call: int | None, resume: str | None) -> None:
    spawn_ranks(ddp_resume_worker, str(tmp_path), die_at_call, resume)


@case("train", "2-process DDP (gloo): rank 1 dies without a word at step 6",
      "rank 0 exits with `error: ... collective ... --resume latest` after the collective timeout instead of "
      "hanging; `--resume latest` on 2 processes continues from step 4 and matches an uninterrupted run")
def test_ddp_dead_peer_then_resume(tmp_path):
    spawn_two(tmp_path, die_at_call=6, resume=None)
    assert not (tmp_path / "outcome1.txt").exists()
    msg = (tmp_path / "outcome0.txt").read_text()
    assert msg.startswith("UserError") and "collective" in msg and "--resume latest" in msg, msg
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_0000002", "step_0000004"]

    spawn_two(tmp_path, die_at_call=None, resume="latest")
    assert (tmp_path / "outcome0.txt").read_text() == (tmp_path / "outcome1.txt").read_text() == "ok 4"
    single = ToyTask()  # one process with the same global batch gives the same weights (test_ddp)
    fit(single, make_factory(16), TrainConfig(lr=0.05, epochs=2, progress=False, tensorboard=False,
                                               save_every=100), tmp_path / "single")
    ddp = torch.load(tmp_path / "ddp_weights.pt", weights_only=True)
    for k, v in weights(single).items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-5, atol=1e-6)
