"""Stop signals (SIGTERM before a SLURM preemption, SIGINT, SLURM's `--signal=B:USR1@90`): the run finishes the
optimizer step it is in, writes a checkpoint, prints the exact resume command and exits 128 + signal; the resumed
run ends bitwise equal to an uninterrupted one (one process and 2-process DDP), and `metrics.jsonl` holds
every step once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from rel_cases import case
from rel_helpers import HERE, cli, ddp_stop_worker
from test_kill_distill import assert_bitwise_equal, reference, write_config  # noqa: F401  (fixture)
from toy import ToyTask, make_factory, weights

from clipdistill.errors import Interrupted
from clipdistill.train import TrainConfig, fit
from clipdistill.train.checkpoint import list_checkpoints
from ddp_helpers import before_call, spawn_ranks

FAULTY = HERE / "faulty_cli.py"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1"])
@case("stop", "SIGTERM (or SLURM's `--signal=B:USR1@90` choice, SIGUSR1) reaches `distill` inside optimizer "
      "step 5 of 8, mid-epoch, between checkpoints (every 3 steps)",
      "the step finishes, `step_0000005` is written, the exact `clipdistill distill ... --resume latest` line is "
      "printed, exit 128+signal; the resumed run's final weights are bitwise equal to an uninterrupted run")
def test_signal_mid_epoch_checkpoints_and_resumes_bitwise(tmp_path, pairs, reference, sig):  # noqa: F811
    cfg, run = write_config(tmp_path / "cfg.yaml", pairs), tmp_path / "run"
    stopped = subprocess.run([sys.executable, str(FAULTY), f"{sig.lower()}-mid-step:5", "distill", cfg, "--out",
                              str(run)], capture_output=True, text=True, timeout=240)
    signum = getattr(signal, sig)
    assert stopped.returncode == 128 + signum, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert f"stopped by {sig} after optimizer step 5 of 8" in stopped.stderr
    assert f"Continue with: clipdistill distill {cfg} --out {run} --resume latest" in stopped.stderr
    assert [p.name for p in list_checkpoints(run)] == ["step_0000003", "step_0000005"]
    assert not (run / "model.safetensors").exists()
    resumed = cli("distill", cfg, "--out", str(run), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    assert_bitwise_equal(run, reference)


@case("stop", "Ctrl-C (SIGINT) inside step 5 of a run logging every step, TensorBoard on; then `--resume latest`",
      "`Interrupted` after step 5 with its checkpoint; `metrics.jsonl` holds steps 1..12 once each (the resume "
      "cuts what the stopped run logged after its checkpoint, and a torn last line); TensorBoard's new events "
      "file carries purge_step; weights bitwise equal to an uninterrupted run")
def test_sigint_then_resume_logs_each_step_once(tmp_path):
    c = TrainConfig(lr=0.05, epochs=3, save_every=4, log_every=1, progress=False, tensorboard=True)
    ref = ToyTask(noisy=True)
    fit(ref, make_factory(16), c, tmp_path / "ref")
    run = tmp_path / "run"
    outer = signal.getsignal(signal.SIGINT)  # Python's default handler, or SIG_IGN under nohup / a background job
    ctrl_c = before_call(ToyTask(noisy=True), 5, lambda: os.kill(os.getpid(), signal.SIGINT))  # the step goes on
    with pytest.raises(Interrupted, match="SIGINT after optimizer step 5 of 12") as stop:
        fit(ctrl_c, make_factory(16), c, run)
    assert stop.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is outer  # the loop's handler is gone again
    assert [p.name for p in list_checkpoints(run)] == ["step_0000004", "step_0000005"]
    with open(run / "metrics.jsonl", "a") as f:  # what a kill inside a write leaves
        f.write('{"step": 6, "lo')
    resumed = ToyTask(noisy=True)
    fit(resumed, make_factory(16), c, run, resume="latest")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))
    for k, v in weights(ref).items():
        assert torch.equal(weights(resumed)[k], v), k
    events = sorted((run / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 13))  # no replayed step twice


def test_second_signal_stops_at_once(tmp_path):
    """A second signal while the first is being honoured takes the default action (here: SIGTERM kills)."""
    code = ("import os, signal; from clipdistill.runfolder import StopSignals\n"
            "with StopSignals() as s:\n    os.kill(os.getpid(), signal.SIGTERM); assert s.signum == signal.SIGTERM\n"
            "    os.kill(os.getpid(), signal.SIGTERM); print('survived')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout, proc.stderr


def spawn_two(tmp_path, signal_at_call: int | None, resume: str | None, tag: str) -> None:
    spawn_ranks(ddp_stop_worker, str(tmp_path), signal_at_call, resume, tag)


@case("stop", "2-process DDP (gloo): SIGTERM reaches rank 1 only, inside its step 3 of 8",
      "the ranks agree on the step (a stop flag all-reduced each step): both stop after step 3 with exit code "
      "143, rank 0 writes `step_0000003`; `--resume latest` on 2 processes ends bitwise equal to an "
      "uninterrupted 2-process run")
def test_ddp_ranks_agree_on_the_stop_step(tmp_path):
    spawn_two(tmp_path, signal_at_call=None, resume=None, tag="ref")
    spawn_two(tmp_path, signal_at_call=3, resume=None, tag="run")
    outcomes = [(tmp_path / f"run-outcome{r}.txt").read_text() for r in range(2)]
    for o in outcomes:
        assert o.startswith("stopped 143 stopped by SIGTERM after optimizer step 3 of 8"), outcomes
    assert [p.name for p in list_checkpoints(tmp_path / "run-run")] == ["step_0000003"]
    spawn_two(tmp_path, signal_at_call=None, resume="latest", tag="run")
    assert [(tmp_path / f"run-outcome{r}.txt").read_text() for r in range(2)] == ["ok 5", "ok 5"]
    got = torch.load(tmp_path / "run-weights.pt", weights_only=True)
    want = torch.load(tmp_path / "ref-weights.pt", weights_only=True)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "run-run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


@case("stop", "SIGTERM sent to `torchrun --nproc_per_node 2 ... distill` (as SLURM or a scheduler does) after "
      "its 2nd checkpoint",
      "torchrun forwards it; both ranks finish the same step, rank 0 writes that step's checkpoint and alone "
      "prints the resume command; the resumed torchrun run's weights are bitwise equal to an uninterrupted one")
def test_torchrun_sigterm_then_resume(tmp_path, pairs):
    import time

    from rel_helpers import REPO, tiny_distill_config

    from clipdistill.safeload import load_tensors

    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs), epochs=4, save_every=2, keep_last=10,
                              collective_timeout_s=60)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "clipdistill", "distill", cfg, "--set", "data.batch_size=4"]

    def run(out: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*torchrun, "--out", out, *extra], capture_output=True, text=True, timeout=600,
                              env=env, cwd=REPO)

    ref = run(str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    proc = subprocess.Popen([*torchrun, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step_0000004").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before step 4"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0, stderr[-3000:]
    assert stderr.count("Continue with: clipdistill distill") == 1, stderr[-3000:]  # rank 0 only
    stopped = int(stderr.split("after optimizer step ")[1].split(" ")[0])
    assert 4 <= stopped < 16 and (out / "checkpoints" / f"step_{stopped:07d}").is_dir(), stderr[-3000:]
    assert not (out / "model.safetensors").exists()
    resumed = run(str(out), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = load_tensors(out / "model.safetensors"), load_tensors(tmp_path / "ref" / "model.safetensors")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k
