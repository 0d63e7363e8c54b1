"""Model folders and configs from elsewhere that are broken or unsafe: one clear error, never a random model,
never a traceback, never a pickle's code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from rel_cases import case, param_cases
from rel_helpers import run_main
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the tiny HF folder builder of test_zoo.py
from clipdistill.zoo import load_model, save_run_model  # noqa: E402
from test_zoo import write_hf_clip_folder  # noqa: E402


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return write_hf_clip_folder(tmp_path_factory.mktemp("hf") / "clip")


def copy_folder(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@case("ckpt", "an `hf:` folder whose `model.safetensors.index.json` points at a `pytorch_model.bin` whose pickle "
      "runs `os.system`", "refused (`UnsafeCheckpointError`, exit 2): `.bin` files are only read with "
      "`weights_only=True`; the payload never runs")
def test_hf_index_pointing_at_pickled_code(tmp_path, hf_folder):
    folder = copy_folder(hf_folder, tmp_path / "evil")
    marker = tmp_path / "pwned"
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "x": Payload(marker)}, folder / "pytorch_model.bin")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: "pytorch_model.bin" for k in state}}))
    code, out = run_main("models", "info", f"hf:{folder}")
    assert code == 2 and "refused to load" in out and "Traceback" not in out, out
    assert not marker.exists()


def test_hf_plain_bin_loads_weights_only(tmp_path, hf_folder):
    """Not a fault: a tensors-only `.bin` loads (weights_only=True) with its safetensors twin's embeddings."""
    folder = copy_folder(hf_folder, tmp_path / "bin")
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    a, b = load_model(f"hf:{hf_folder}"), load_model(f"hf:{folder}")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.encode_image(pixels), b.encode_image(pixels))


def _drop_key(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    del state["text_model.final_layer_norm.weight"]
    save_file(state, str(folder / "model.safetensors"))


def _extra_key(folder: Path) -> None:
    state = load_file(str(folder / "model.safetensors"))
    state["text_model.encoder.layers.9.mlp.fc1.weight"] = torch.zeros(2, 2)
    save_file(state, str(folder / "model.safetensors"))


def _more_layers(folder: Path) -> None:  # config.json says 3 layers, the weights have 2
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vision_config"]["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(cfg))


def _truncate(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _bad_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "clip", "projection_dim": ')


def _not_clip(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))


def _index_outside(folder: Path) -> None:  # shards must be files of the folder itself
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "../outside.safetensors" for k in state}}))


HF_FAULTS = param_cases("ckpt", "test_bad_models.py::test_broken_hf_folder", [
    ("missing-weight", "`hf:` folder whose weights lack a tensor its config.json needs",
     "`error: ... weights do not match config.json: 1 missing ['text_model.final_layer_norm.weight']` (exit 2; "
     "transformers alone would random-init it and exit 0)", (_drop_key, ["1 missing", "final_layer_norm"])),
    ("unexpected-weight", "`hf:` folder with a tensor the config has no place for",
     "`error: ... 1 unexpected ['text_model.encoder.layers.9...']` (exit 2)",
     (_extra_key, ["1 unexpected", "layers.9"])),
    ("config-deeper", "`hf:` config.json with more layers than the weights",
     "`error: ... missing ['vision_model.encoder.layers.2...']` (exit 2)", (_more_layers, ["missing", "layers.2"])),
    ("truncated", "`hf:` model.safetensors cut in half", "`error: ... not a readable safetensors file` (exit 2)",
     (_truncate, ["not a readable safetensors file"])),
    ("index-outside", "`hf:` weight index naming a shard outside the folder (`../outside.safetensors`)",
     "`error: ... names '../outside.safetensors', which is not a file in <folder>` (exit 2)",
     (_index_outside, ["'../outside.safetensors', which is not a file in"])),
    ("bad-config-json", "`hf:` config.json that is not valid JSON",
     "`error: ... config.json is not a CLIP config (...)` (exit 2)", (_bad_json, ["is not a CLIP config"])),
    ("not-clip", "`hf:` folder of another model type (`bert`)", "`error: ... is not a CLIP config` (exit 2)",
     (_not_clip, ["is not a CLIP config"])),
])


@pytest.mark.parametrize("fault", HF_FAULTS)
def test_broken_hf_folder(tmp_path, hf_folder, fault):
    damage, needles = fault
    folder = copy_folder(hf_folder, tmp_path / "hf")
    damage(folder)
    code, out = run_main("models", "info", f"hf:{folder}")
    assert code == 2 and "error:" in out and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1, out
    for n in needles:
        assert n in out, (n, out)


def _cfg() -> dict:
    return json.loads((Path(__file__).parents[2] / "src/clipdistill/model_configs/cd-student-xs-32.json").read_text())


def _without_layers(c):
    del c["vision_cfg"]["layers"]


OC_CONFIGS = param_cases("config", "test_bad_models.py::test_bad_open_clip_json_config", [
    ("missing-nested", "an open_clip JSON config without `vision_cfg.layers`",
     "`error: ...: missing vision_cfg.layers (open_clip would silently use its default ...)` instead of a "
     "default 12-layer tower", (_without_layers, ["missing vision_cfg.layers"])),
    ("misspelt-nested", "a misspelt key (`vision_cfg.layres`)",
     "`error: ...: vision_cfg.layres is not an open_clip config key (did you mean vision_cfg.layers?)`",
     (lambda c: c["vision_cfg"].update(layres=2), ["vision_cfg.layres", "did you mean vision_cfg.layers"])),
    ("wrong-type", "a wrongly typed key (`text_cfg.width: \"64\"`)", "`error: ...: text_cfg.width must be int, "
     "got \"64\"`", (lambda c: c["text_cfg"].update(width="64"), ['text_cfg.width must be int, got "64"'])),
])


@pytest.mark.parametrize("bad", OC_CONFIGS)
def test_bad_open_clip_json_config(tmp_path, bad):
    mutate, needles = bad
    cfg = _cfg()
    mutate(cfg)
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(cfg))
    code, out = run_main("models", "info", f"open_clip:{path}")
    assert code == 2 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
    for n in needles:
        assert n in out, (n, out)


@case("config", "a `run:` folder whose model.json is corrupt (cut short, or its arch_config damaged)",
      "`error: ... model.json is not valid JSON ...; the run folder is damaged` / the config key named (exit 2)")
def test_corrupt_run_model_json(tmp_path):
    run = save_run_model(load_model("open_clip:cd-student-xs-32"), tmp_path / "run")
    text = (run / "model.json").read_text()
    (run / "model.json").write_text(text[: len(text) // 2])
    code, out = run_main("models", "info", f"run:{run}")
    assert code == 2 and "is not valid JSON" in out and "damaged" in out and "Traceback" not in out, out
    meta = json.loads(text)
    meta["arch_config"]["vision_cfg"]["width"] = "wide"
    (run / "model.json").write_text(json.dumps(meta))
    code, out = run_main("models", "info", f"run:{run}")
    assert code == 2 and "vision_cfg.width must be int" in out and "Traceback" not in out, out


@case("config", "a public model name (`open_clip:ARCH@TAG`, `open_clip:hf-hub:ORG/NAME`, `hf:ORG/NAME`) that is "
      "not in the Hugging Face cache, offline (`models info` and `models download`)",
      "one line naming the cache folder to fill and the `clipdistill models download SPEC` command (exit 2)")
def test_named_model_offline_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec, folder in (("open_clip:ViT-B-32@laion2b_s34b_b79k", "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"),
                         ("open_clip:hf-hub:timm/ViT-B-16-SigLIP", "models--timm--ViT-B-16-SigLIP"),
                         ("hf:openai/clip-vit-base-patch32", "models--openai--clip-vit-base-patch32")):
        for verb in ("info", "download"):
            code, out = run_main("models", verb, spec)
            assert code == 2 and "Traceback" not in out and len(out.strip().splitlines()) == 1, out
            assert str(tmp_path / "hf" / "hub" / folder) in out and f"clipdistill models download {spec}" in out
    code, out = run_main("models", "download", "open_clip:cd-student-xs-32")
    assert code == 2 and "nothing to download" in out, out


@case("config", "the TinyCLIP preset's weight inheritance (`student.init=inherit`) from an `hf:` teacher",
      "`error: weight inheritance (student.init=inherit) needs an open_clip-architecture teacher ... this one is a "
      "Hugging Face CLIPModel` (exit 2; was: \"the teacher has 0 layers\")")
def test_inherit_from_hf_teacher_names_the_reason(tmp_path, pairs, hf_folder):
    import yaml
    from rel_helpers import tiny_distill_config

    path = tmp_path / "c.yaml"
    cfg = yaml.safe_load(open(tiny_distill_config(path, str(pairs), steps=2)))
    cfg["student"]["init"] = "inherit"
    cfg["teacher"] = {"mode": "online", "models": [f"hf:{hf_folder}"]}
    cfg["loss"] = {"logit_kd": {}}
    path.write_text(yaml.safe_dump(cfg))
    code, out = run_main("distill", str(path), "--out", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in out, out
    assert "needs an open_clip-architecture teacher" in out and "Hugging Face CLIPModel" in out, out
    assert "0 layers" not in out


TOKENIZE_HUGE = """
import random, sys
import clipdistill
from clipdistill.zoo import load_model
word = "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
for spec in sys.argv[1:]:
    m = load_model(spec)
    ids = m.tokenizer([word, "a red square"])
    print(spec, tuple(ids.shape), flush=True)
from clipdistill.td.align import teacher_spans  # CLIP-TD: its student's tokenizer, the teacher's token spans
from clipdistill.td.student import VLStudentConfig, build_student
print("td-student", tuple(build_student(VLStudentConfig())[0].tokenize([word, "a red square"]).shape), flush=True)
spans = teacher_spans(m, [word, "a red square"], m.context_length)
print("td-spans", [len(s) for s in spans], spans[0][1][0], flush=True)
"""


@case("data", "a text of a million letters without a space reaching a model's tokenizer by a path that has no "
      "`max_caption_chars` (retrieval captions, zero-shot class prompts, task questions), for open_clip, `hf:` "
      "CLIP and `hf:` SigLIP models and CLIP-TD's students and teacher token spans", "every `ClipModel` tokenizer "
      "(and the CLIP-TD student's) cuts each text to 20 x context_length characters first (no real caption's "
      "tokens change): tokenised in seconds, not hours")
def test_huge_text_tokenises_in_seconds_for_every_backend(tmp_path, hf_folder):
    import subprocess

    from siglip_models import write_hf_siglip_folder

    specs = [f"hf:{write_hf_siglip_folder(tmp_path / 'siglip')}", f"hf:{hf_folder}", "open_clip:cd-student-xs-32"]
    # without the cap open_clip's BPE alone takes hours on this word: completing inside the timeout is the proof
    proc = subprocess.run([sys.executable, "-c", TOKENIZE_HUGE, *specs], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert [ln.split(" ")[0] for ln in lines] == [*specs, "td-student", "td-spans"], proc.stdout
    assert lines[0].endswith("(2, 16)") and lines[1].endswith("(2, 32)") and lines[2].endswith("(2, 32)"), lines
    assert lines[3] == "td-student (2, 32)" and lines[4] == "td-spans [32, 32] 0", lines
