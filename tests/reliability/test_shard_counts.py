"""How many samples a tar-shard source holds (its epoch length): bad counts are one-line errors before training,
and a run on shards with a given count resumes bitwise after a kill."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import yaml
from rel_cases import case
from rel_helpers import HERE, cli, run_main, sample_members, write_tar

from clipdistill.safeload import load_tensors
from clipdistill.train.checkpoint import list_checkpoints

ARCH = "open_clip:cd-student-xs-32"
TRAIN = {"epochs": 2, "lr": 1e-3, "save_every": 3, "keep_last": 2, "progress": False, "tensorboard": False,
         "device": "cpu", "warmup_steps": 2}


def shards(folder, per_shard: int = 16, count: int = 2) -> str:
    for s in range(count):
        write_tar(folder / f"{s:05d}.tar", sample_members(range(s * per_shard, (s + 1) * per_shard)))
    return str(folder / f"{{00000..{count - 1:05d}}}.tar")


def distill_config(path, source: str, **data) -> str:
    cfg = {"student": {"model": ARCH}, "teacher": {"mode": "online", "models": [ARCH]},
           "data": {"source": source, "batch_size": 8, **data}, "loss": {"clip": {}, "fd": {}}, "train": TRAIN}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@case("data", "a `sizes.json` beside the shards (open_clip's shard-size file) without an entry for one shard",
      "`error: .../sizes.json has no count for 00001.tar ...` before any image is read (exit 2, no traceback)")
def test_sizes_json_missing_a_shard(tmp_path):
    pattern = shards(tmp_path / "s")
    (tmp_path / "s" / "sizes.json").write_text(json.dumps({"00000.tar": 16}))
    code, out = run_main("distill", distill_config(tmp_path / "c.yaml", pattern), "--out", str(tmp_path / "run"))
    assert code == 2 and "sizes.json has no count for 00001.tar" in out and "Traceback" not in out, out
    assert not (tmp_path / "run" / "checkpoints").exists()


@case("data", "`data.num_samples` far above what the shards' bytes can hold (400M for 32 small samples)",
      "`error: data.num_samples says 400000000 samples in 2 shards, but N at most fit ...` (exit 2), not a run "
      "planned for thousands of passes")
def test_num_samples_beyond_the_shards(tmp_path):
    cfg = distill_config(tmp_path / "c.yaml", shards(tmp_path / "s"), num_samples=400_000_000)
    code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"))
    assert code == 2 and "data.num_samples says 400000000 samples in 2 shards, but" in out, out
    assert "Traceback" not in out


@case("config", "`data.num_samples` set for a CSV source (its length is known)",
      "`error: data.num_samples=... counts the samples of tar shards; ... knows its own length` (exit 2)")
def test_num_samples_for_a_table(tmp_path, pairs):
    code, out = run_main("distill", distill_config(tmp_path / "c.yaml", str(pairs), num_samples=32), "--out",
                         str(tmp_path / "run"))
    assert code == 2 and "knows its own length: drop data.num_samples" in out and "Traceback" not in out, out


@case("kill", "SIGKILL `distill` mid-epoch on tar shards whose count is given (`data.num_samples`)",
      "the epoch length comes from the count (recorded in the manifest); `--resume latest` gives final weights "
      "bitwise equal to an uninterrupted run")
def test_kill_mid_epoch_on_counted_shards(tmp_path):
    pattern = shards(tmp_path / "s")  # 32 samples, batch 8: 4 steps an epoch, 2 epochs
    cfg, run, ref = distill_config(tmp_path / "c.yaml", pattern, num_samples=32), tmp_path / "run", tmp_path / "ref"
    done = cli("distill", cfg, "--out", str(ref))
    assert done.returncode == 0, done.stderr
    assert "data: 32 samples (from data.num_samples): 4 batches an epoch, 8 optimizer steps" in done.stdout
    assert json.loads((ref / "manifest.json").read_text())["schedule"]["epoch"] == {
        "samples": 32, "from": "data.num_samples", "batches_per_rank": 4}
    killed = subprocess.run([sys.executable, str(HERE / "faulty_cli.py"), "kill-mid-epoch:5", "distill", cfg,
                             "--out", str(run)], capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in list_checkpoints(run)] == ["step_0000003"]
    resumed = cli("distill", cfg, "--out", str(run), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    for rel in ("model.safetensors", "checkpoints/step_0000008/model.safetensors"):
        got, want = load_tensors(run / rel), load_tensors(ref / rel)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), rel
