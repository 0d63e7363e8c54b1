import json

import pytest
import torch
from toy import ToyTask, make_factory, weights

from clipdistill.errors import UserError
from clipdistill.safeload import load_object
from clipdistill.train import NonFiniteLoss, TrainConfig, fit
from clipdistill.train.checkpoint import list_checkpoints

BASE = {"lr": 0.05, "progress": False, "tensorboard": False, "log_every": 1, "weight_decay": 0.01, "grad_clip": 5.0}


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**BASE, **kw})


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    full, half = ToyTask(), ToyTask()
    fit(full, make_factory(16), cfg(epochs=2), tmp_path / "full")
    fit(half, make_factory(8), cfg(epochs=2, accum_steps=2), tmp_path / "half")
    for k, v in weights(full).items():
        torch.testing.assert_close(weights(half)[k], v, rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # 64 samples / 16 per step * 2 epochs


def test_training_reduces_loss_and_logs_terms(tmp_path):
    fit(ToyTask(), make_factory(16), cfg(epochs=3, warmup_steps=2, tensorboard=True), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["mse"] < rows[0]["mse"]
    assert {"step", "epoch", "lr", "loss", "mse", "samples_per_s", "grad_norm"} <= set(rows[0])
    assert rows[0]["lr"] == pytest.approx(0.05 * 0.5)  # first of two warmup steps
    assert any((tmp_path / "tb").iterdir())


def test_checkpoints_keep_last_k_and_state_loads_safely(tmp_path):
    fit(ToyTask(), make_factory(16), cfg(epochs=2, save_every=2, keep_last=2), tmp_path)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_0000006", "step_0000008"]
    state = load_object(tmp_path / "checkpoints" / "step_0000008" / "state.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 4)
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}


def test_nan_loss_stops_with_step_terms_and_last_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"step 3 .*'mse': nan.*step_0000002"):
        fit(ToyTask(nan_at_call=4), make_factory(16), cfg(epochs=2, save_every=2), tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002"]


def test_resume_after_crash_is_bitwise_identical(tmp_path):
    c = cfg(epochs=3, save_every=3)
    ref = ToyTask(noisy=True)
    fit(ref, make_factory(16), c, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):  # dies during step 5 (after the step-3 checkpoint) of 12
        fit(ToyTask(noisy=True, crash_at_call=5), make_factory(16), c, tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / ".tmp_step_0000004_1").mkdir()  # a half-written checkpoint is ignored
    again = ToyTask(noisy=True)
    fit(again, make_factory(16), c, tmp_path / "run", resume="latest")
    for k, v in weights(ref).items():
        assert torch.equal(weights(again)[k], v), k


def test_lr_scale_slows_only_the_named_module_and_survives_resume(tmp_path):
    start = weights(ToyTask())
    plain, slow = ToyTask(), ToyTask()
    fit(plain, make_factory(16), cfg(epochs=2), tmp_path / "plain")
    c = cfg(epochs=2, save_every=4, lr_scale={"net.0": 0.01})
    fit(slow, make_factory(16), c, tmp_path / "slow")

    def moved(task, name):
        return (weights(task)[name] - start[name]).abs().max().item()
    assert moved(slow, "net.0.weight") < 0.05 * moved(plain, "net.0.weight")
    assert moved(slow, "net.2.weight") > 0.5 * moved(plain, "net.2.weight")
    rows = [json.loads(line) for line in (tmp_path / "slow" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["lr"] == pytest.approx(0.05)  # the logged lr is the base lr
    with pytest.raises(KeyboardInterrupt):  # resumed from the step-4 checkpoint: the scale is applied again
        fit(ToyTask(crash_at_call=6), make_factory(16), c, tmp_path / "run")
    again = ToyTask()
    fit(again, make_factory(16), c, tmp_path / "run", resume="latest")
    for k, v in weights(slow).items():
        assert torch.equal(weights(again)[k], v), k
    with pytest.raises(UserError, match="lr_scale changed"):  # another grouping does not load silently
        fit(ToyTask(), make_factory(16), cfg(epochs=2), tmp_path / "run", resume="latest")


def test_factory_without_start_step_is_skipped_by_iteration(tmp_path):
    inner = make_factory(16)
    c = cfg(epochs=2, save_every=2)
    ref = ToyTask(noisy=True)
    fit(ref, lambda epoch: inner(epoch), c, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        fit(ToyTask(noisy=True, crash_at_call=4), lambda epoch: inner(epoch), c, tmp_path / "run")
    again = ToyTask(noisy=True)
    fit(again, lambda epoch: inner(epoch), c, tmp_path / "run", resume="latest")
    for k, v in weights(ref).items():
        assert torch.equal(weights(again)[k], v), k


def test_threads_sets_the_process_cpu_thread_budget(tmp_path):
    before = torch.get_num_threads()
    seen = []

    class Counting(ToyTask):
        def training_step(self, batch):
            seen.append(torch.get_num_threads())
            return super().training_step(batch)

    try:
        torch.set_num_threads(2)  # so the assertion below cannot hold by accident
        fit(Counting(), make_factory(16), cfg(epochs=1, threads=1), tmp_path)
        assert seen and set(seen) == {1}
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        cfg(threads=0)
