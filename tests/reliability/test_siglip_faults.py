"""Sigmoid (SigLIP) models given what they cannot honour: refused with one line naming the problem."""

from __future__ import annotations

import pytest
from rel_cases import case
from rel_helpers import run_main, tiny_distill_config

from siglip_models import write_hf_siglip_folder, write_open_clip_siglip_json


@pytest.fixture(scope="module")
def sigmoid_teacher(tmp_path_factory) -> str:
    return f"open_clip:{write_open_clip_siglip_json(tmp_path_factory.mktemp('arch') / 'tiny-sigmoid.json')}"


def _distill(tmp_path, pairs, *sets: str) -> tuple[int, str]:
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs))
    return run_main("distill", cfg, "--out", str(tmp_path / "run"), *[a for s in sets for a in ("--set", s)])


@case("config", "`logit_kd` from a sigmoid (SigLIP) teacher with a fixed teacher scale (`teacher.logit_scale=50`)",
      "`error: loss 'logit_kd': a sigmoid (SigLIP) teacher's targets use its own scale with its own bias ...` "
      "(exit 2, nothing trained)")
def test_fixed_scale_for_a_sigmoid_teacher_is_refused(tmp_path, pairs, sigmoid_teacher):
    code, out = _distill(tmp_path, pairs, "teacher.mode=online", f"teacher.models=[{sigmoid_teacher}]",
                         "teacher.logit_scale=50", "loss={logit_kd: {}}")
    assert code == 2 and "Traceback" not in out and "its own scale with its own bias" in out, out
    assert not (tmp_path / "run" / "checkpoints").exists()


@case("config", "`logit_kd` over a teacher ensemble that includes a sigmoid (SigLIP) teacher",
      "`error: loss 'logit_kd' does not average sigmoid (SigLIP) teachers ...` (exit 2, nothing trained)")
def test_logit_kd_over_a_sigmoid_ensemble_is_refused(tmp_path, pairs, sigmoid_teacher):
    code, out = _distill(tmp_path, pairs, "teacher.mode=ensemble",
                         f"teacher.models=[{sigmoid_teacher}, open_clip:cd-student-xs-32]", "loss={logit_kd: {}}")
    assert code == 2 and "Traceback" not in out and "does not average sigmoid" in out, out
    assert not (tmp_path / "run" / "checkpoints").exists()


@case("config", "a `siglip` loss with a distributed variant open_clip has but clipdistill does not (`reduce`)",
      "`error: ... dist_impl: Input should be 'bidir', 'shift' or 'gather'` (exit 2)")
def test_unknown_siglip_dist_impl_is_refused(tmp_path, pairs):
    code, out = _distill(tmp_path, pairs, "loss={siglip: {dist_impl: reduce}}")
    assert code == 2 and "Traceback" not in out and "dist_impl" in out and "'gather'" in out, out


@case("config", "an `hf:` SigLIP folder whose tokenizer file is corrupt",
      "`error: hf:DIR: cannot build its tokenizer from DIR (...)` (exit 2, no traceback)")
def test_hf_siglip_with_a_broken_tokenizer_is_one_line(tmp_path):
    folder = write_hf_siglip_folder(tmp_path / "siglip")
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    code, out = run_main("models", "info", f"hf:{folder}")
    assert code == 2 and "Traceback" not in out and "cannot build its tokenizer" in out, out


@case("config", "an open_clip SigLIP architecture whose Hub tokenizer is not in the local cache (offline)",
      "`error: open_clip:ARCH: cannot load its tokenizer, which open_clip fetches from the Hugging Face Hub ...` "
      "(exit 2, no traceback)")
def test_open_clip_siglip_without_its_cached_tokenizer_is_one_line(tmp_path):
    import json

    path = write_open_clip_siglip_json(tmp_path / "tiny-sigmoid.json")
    cfg = json.loads(path.read_text())
    cfg["text_cfg"]["hf_tokenizer_name"] = "timm/ViT-B-16-SigLIP"  # as open_clip's ViT-B-16-SigLIP.json names it
    path.write_text(json.dumps(cfg))
    code, out = run_main("models", "info", f"open_clip:{path}")
    assert code == 2 and "Traceback" not in out and "cannot load its tokenizer" in out, out
