"""`clipdistill vlpretrain` end to end on a tiny world: the Hugging Face folder loads with transformers and
gives the trained model's outputs; probes; SIGKILL + `--resume latest` equals an uninterrupted run bitwise."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import BertTokenizerFast, ViltImageProcessor, ViltModel, ViltProcessor
from vlp_helpers import REPO, cli, tiny_config

from clipdistill.safeload import load_tensors
from clipdistill.train.checkpoint import list_checkpoints
from clipdistill.vlpretrain.model import ImageTransform, ViltPretrainer, load_folder
from clipdistill.vlpretrain.text import load_tokenizer
from clipdistill.world.text import WORLD_ATTRIBUTES

FAULTY = REPO / "tests" / "reliability" / "faulty_cli.py"


@pytest.fixture(scope="module")
def run(vlp_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("vlprun")
    cfg = tiny_config(root / "cfg.yaml", f"world:{vlp_world}")
    proc = cli("vlpretrain", str(cfg), "--out", str(root / "run"))
    assert proc.returncode == 0, proc.stderr
    return root / "run", proc.stdout


def student_from_checkpoint(run_dir):
    """The trained ViltPretrainer as the training loop left it (the last checkpoint's weights)."""
    folder = run_dir / "hf"
    from transformers import ViltConfig

    model = ViltPretrainer(ViltConfig.from_pretrained(str(folder)), itc=True)
    weights = load_tensors(list_checkpoints(run_dir)[-1] / "model.safetensors")
    model.load_state_dict({k[len("student."):]: v for k, v in weights.items()})
    return model.eval()


def test_hf_folder_loads_with_transformers_and_gives_identical_outputs(run, vlp_world):
    run_dir, _ = run
    folder = run_dir / "hf"
    ours = student_from_checkpoint(run_dir)
    theirs = ViltModel.from_pretrained(str(folder), local_files_only=True).eval()
    tok = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    proc = ViltImageProcessor.from_pretrained(str(folder), local_files_only=True)
    images = [Image.open(vlp_world / "images" / "pairs" / f"p{i:06d}.png").convert("RGB") for i in range(4)]
    texts = ["a picture of a large red circle", "a blue star on the left", "there is a star", "an image"]
    enc = tok(texts, padding=True, return_tensors="pt")
    pix = proc(images=images, return_tensors="pt")
    transform = ImageTransform(32, 8)
    assert torch.equal(pix["pixel_values"], torch.stack([transform(im) for im in images]))  # what training saw
    assert tok.model_max_length == 40
    assert enc["input_ids"].tolist() == load_tokenizer(run_dir / "tokenizer")(texts, padding=True)["input_ids"]
    with torch.no_grad():
        torch.manual_seed(0)  # ViLT draws its patch order from the global stream
        a = theirs(**enc, pixel_values=pix["pixel_values"], pixel_mask=pix["pixel_mask"])
        torch.manual_seed(0)
        hidden, pooled = ours(enc["input_ids"], enc["attention_mask"], pix["pixel_values"])
    assert torch.equal(a.last_hidden_state, hidden)
    assert torch.equal(a.pooler_output, pooled)
    # the transformers processor (tokenizer + image processor) reads the folder as one
    both = ViltProcessor.from_pretrained(str(folder), local_files_only=True)(images=images[0], text=texts[0],
                                                                             return_tensors="pt")
    assert both["input_ids"].tolist() == tok([texts[0]])["input_ids"]


def test_heads_round_trip(run):
    run_dir, _ = run
    ours = student_from_checkpoint(run_dir)
    back, _ = load_folder(run_dir / "hf")
    want, got = ours.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    # save_pretrained's and our own weight files get the umask's mode, not safetensors' 0600
    from clipdistill.safeload import current_umask

    weights = sorted((run_dir / "hf").glob("*.safetensors"))
    assert len(weights) == 2 and {w.stat().st_mode & 0o777 for w in weights} == {0o666 & ~current_umask()}


def test_probes_reported_per_attribute_type_with_majority_share(run):
    run_dir, stdout = run
    result = json.loads((run_dir / "probes.json").read_text())
    mlm, itm = result["metrics"]["mlm"], result["metrics"]["itm"]
    assert set(mlm) == {"colour", "shape", "count", "position", "size"}
    for kind in ("colour", "shape", "size"):  # every tiny-world caption names a colour and a shape
        assert mlm[kind]["n"] > 0 and 0 < mlm[kind]["majority_share"] <= 1 and 0 <= mlm[kind]["accuracy"] <= 1
        assert 0 <= mlm[kind]["accuracy_other_image"] <= 1
    # the training prior, from the training rows' captions (the world is a table source): each type's most
    # common training word, which is one of that type's words, and its share of the held-out slots
    for kind in ("colour", "shape"):
        assert mlm[kind]["prior_word"] in {p.split()[-1].lower() for p in WORLD_ATTRIBUTES[kind]}
        assert 0 <= mlm[kind]["prior_share"] <= mlm[kind]["majority_share"]
    assert itm["positive"]["n"] == result["metrics"]["samples"] == 40
    assert 0 <= itm["accuracy_vs_swap"] <= 1 and 0 <= itm["accuracy_vs_random"] <= 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stage"] == "vlpretrain" and manifest["probes"] == result["metrics"]
    assert "rows 260..299" in manifest["probe"]["held_out"]  # the last 40 of 300 pairs, left out of training
    assert "majority" in stdout and "other image" in stdout and "prior" in stdout and "ITM balanced accuracy" in stdout


def test_killed_then_resumed_equals_uninterrupted(run, vlp_world, tmp_path):
    ref_dir, _ = run
    cfg = tiny_config(tmp_path / "cfg.yaml", f"world:{vlp_world}")
    out = tmp_path / "run"
    killed = cli("kill-mid-epoch:3", "vlpretrain", str(cfg), "--out", str(out), script=FAULTY)
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in list_checkpoints(out)] == ["step_0000002"]
    assert not (out / "hf").exists()
    resumed = cli("vlpretrain", str(cfg), "--out", str(out), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    for rel in ("hf/model.safetensors", "hf/pretrain_heads.safetensors", "checkpoints/step_0000006/model.safetensors"):
        got, want = load_tensors(out / rel), load_tensors(ref_dir / rel)
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (rel, k)
    assert (out / "probes.json").read_text() == (ref_dir / "probes.json").read_text().replace(str(ref_dir), str(out))


def test_sigterm_checkpoints_then_resume_equals_uninterrupted(run, vlp_world, tmp_path):
    """A preempted pretraining run (SIGTERM inside step 3) finishes that step, checkpoints it, names the resume
    command and exits 143; resumed, it ends where an uninterrupted run ends."""
    ref_dir, _ = run
    cfg = tiny_config(tmp_path / "cfg.yaml", f"world:{vlp_world}")
    out = tmp_path / "run"
    stopped = cli("sigterm-mid-step:3", "vlpretrain", str(cfg), "--out", str(out), script=FAULTY)
    assert stopped.returncode == 143, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert f"Continue with: clipdistill vlpretrain {cfg} --out {out} --resume latest" in stopped.stderr
    assert [p.name for p in list_checkpoints(out)] == ["step_0000002", "step_0000003"]
    resumed = cli("vlpretrain", str(cfg), "--out", str(out), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    for rel in ("hf/model.safetensors", "hf/pretrain_heads.safetensors"):
        got, want = load_tensors(out / rel), load_tensors(ref_dir / rel)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), rel


def test_runs_under_torchrun_on_two_processes(vlp_world, tmp_path):
    import subprocess
    import sys

    cfg = tiny_config(tmp_path / "cfg.yaml", f"world:{vlp_world}", train={"steps": 4})
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "clipdistill", "vlpretrain", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    assert [p.name for p in list_checkpoints(out)][-1] == "step_0000004"
    assert ViltModel.from_pretrained(str(out / "hf"), local_files_only=True).config.hidden_size == 32
    assert json.loads((out / "probes.json").read_text())["metrics"]["samples"] == 40
