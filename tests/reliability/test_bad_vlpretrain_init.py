"""`vlpretrain` with `student.init` naming a CLIP whose image tower does not map exactly onto a ViLT (ln_pre, a
ResNet, layer scale, an attentional pooler, custom blocks, an activation ViLT lacks), an architecture key that
contradicts the tower, or no SPEC at all: one line each, naming the reason, before any training."""

from __future__ import annotations

import json

import pytest
import yaml
from rel_cases import case, param_cases
from rel_helpers import assert_one_line_refusal, run_main

VISION = {"image_size": 16, "patch_size": 4, "width": 32, "layers": 1, "head_width": 16, "no_ln_pre": True}


def tower(folder, **vision) -> str:
    """`open_clip:CFG.json` for a tiny ViT CLIP (random init) with `vision` over VISION."""
    path = folder / "tower.json"
    path.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {**VISION, **vision},
                                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                                             "layers": 1}}))
    return f"open_clip:{path}"


def init_config(path, source: str, student: dict) -> str:
    cfg = {"student": student, "tokenizer": {"vocab_size": 100}, "data": {"source": source, "batch_size": 8},
           "probe": {"samples": 8}, "train": {"steps": 2, "progress": False, "tensorboard": False, "device": "cpu"}}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@case("config", "`vlpretrain` with `student.init` a CLIP whose ViT tower has `ln_pre` (open_clip's default)",
      "one-line error: ViLT has no pre-LayerNorm, the copy is exact only for towers built with "
      "`vision_cfg.no_ln_pre: true` (exit 2, nothing trained)")
def test_init_tower_with_ln_pre(tmp_path, pairs):
    cfg = init_config(tmp_path / "c.yaml", str(pairs), {"init": "open_clip:cd-student-xs-32"})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "ln_pre", "no pre-LayerNorm", "vision_cfg.no_ln_pre: true")
    assert not (tmp_path / "run" / "checkpoints").exists()


@case("config", "`vlpretrain` with `student.init` a CLIP with a ResNet image tower",
      "one-line error: the tower is ModifiedResNet, not an open_clip VisionTransformer (exit 2)")
def test_init_resnet_tower(tmp_path, pairs):
    cfg = init_config(tmp_path / "c.yaml", str(pairs), {"init": "open_clip:cd-teacher-rn-64"})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "ModifiedResNet, not an open_clip VisionTransformer")


TOWERS = param_cases("config", "test_bad_vlpretrain_init.py::test_init_tower_vilt_cannot_reproduce", [
    ("layer_scale", "`vlpretrain` with `student.init` a ViT tower with layer scale (`ls_init_value`)",
     "one-line error: ViLT's layers have no layer scale (exit 2)", ({"ls_init_value": 0.1}, "layer scale")),
    ("attentional_pool", "`vlpretrain` with `student.init` a ViT tower with an attentional pooler",
     "one-line error: ViLT has no attentional pooler (exit 2)",
     ({"attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 4}, "attentional pooler")),
    ("custom_blocks", "`vlpretrain` with `student.init` a ViT tower with custom blocks (`qk_norm`)",
     "one-line error naming CustomResidualAttentionBlock (exit 2)", ({"qk_norm": True}, "CustomResidualAttention")),
    ("tanh_gelu", "`vlpretrain` with `student.init` a ViT tower whose GELU is the tanh approximation",
     "one-line error: no exact transformers ViLT activation for it (exit 2)",
     ({"act_kwargs": {"approximate": "tanh"}}, "no exact transformers ViLT hidden_act")),
])


@pytest.mark.parametrize("payload", TOWERS)
def test_init_tower_vilt_cannot_reproduce(tmp_path, pairs, payload):
    vision, needle = payload
    cfg = init_config(tmp_path / "c.yaml", str(pairs), {"init": tower(tmp_path, **vision)})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, needle)


@case("config", "`vlpretrain` with `student.init` and `student.hidden_size` / `patch_size` set to other values "
      "than the tower's", "one-line error naming each key, its value and the tower's (exit 2)")
def test_init_arch_key_contradicting_the_tower(tmp_path, pairs):
    cfg = init_config(tmp_path / "c.yaml", str(pairs), {"init": tower(tmp_path), "hidden_size": 64,
                                                         "patch_size": 8, "num_layers": 1})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "student.hidden_size=64 but the tower has 32",
                            "student.patch_size=8 but the tower has 4")
    assert "num_layers" not in out  # set, but to the tower's value


@case("config", "`vlpretrain` with `student.init` that is not a model SPEC",
      "`invalid config` naming student.init and the SPEC forms (exit 2, no run folder)")
def test_init_not_a_spec(tmp_path, pairs):
    cfg = init_config(tmp_path / "c.yaml", str(pairs), {"init": "runs/clip"})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "student.init", "run:DIR")
    assert not (tmp_path / "run").exists()


@case("config", "`vlpretrain --resume latest` with `student.init` naming other weights than the run started from",
      "one-line error naming both (SPEC and weights hash) (exit 2); the manifest keeps the init the run started from")
def test_resume_with_other_init_weights(tmp_path, pairs):
    import torch

    from clipdistill.safeload import save_tensors
    from clipdistill.zoo import load_model

    arch = tower(tmp_path)
    specs = []
    for seed in (0, 1):  # one architecture, two sets of weights
        torch.manual_seed(seed)
        path = tmp_path / f"w{seed}.safetensors"
        save_tensors({k: v.contiguous() for k, v in load_model(arch).inner.state_dict().items()}, path)
        specs.append(f"{arch}@{path}")
    out = tmp_path / "run"
    code, log = run_main("vlpretrain", init_config(tmp_path / "a.yaml", str(pairs), {"init": specs[0]}),
                         "--out", str(out))
    assert code == 0, log
    first = json.loads((out / "manifest.json").read_text())["init"]
    code, log = run_main("vlpretrain", init_config(tmp_path / "b.yaml", str(pairs), {"init": specs[1]}),
                         "--out", str(out), "--resume", "latest")
    assert_one_line_refusal(code, log, "w0.safetensors", "w1.safetensors",
                            "resume with the student.init the run started from")
    assert json.loads((out / "manifest.json").read_text())["init"] == first
