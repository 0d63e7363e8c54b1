"""The pretrained ViLT shipped for the demo's CLIP-TD part: a transformers ViLT folder that loads offline, the
file its README describes, and the student the demo's protocol stage names."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from clipdistill import demo


def _folder() -> Path:
    spec = demo.vl_student()
    assert spec.startswith("hf:")
    return Path(spec[3:])


def test_shipped_vilt_is_the_file_its_readme_names_and_loads_with_transformers():
    from transformers import BertTokenizerFast, ViltConfig, ViltModel

    folder = _folder()
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert re.search(r"sha256 ([0-9a-f]{64})", (folder / "README.md").read_text()).group(1) == digest
    cfg = ViltConfig.from_pretrained(folder)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.image_size, cfg.patch_size) == (128, 4, 32, 4)
    model = ViltModel.from_pretrained(folder, use_safetensors=True)
    assert sum(p.numel() for p in model.parameters()) > 500_000
    tok = BertTokenizerFast.from_pretrained(folder)
    assert tok.vocab_size == cfg.vocab_size and "[UNK]" not in tok.tokenize("a red circle on the left")


def test_demo_protocol_stage_fine_tunes_the_shipped_vilt(tmp_path):
    stages = {name: cmds for name, _, cmds in demo.plan(tmp_path, demo.SIZES["small"], None, None)}
    (cmd,) = stages["clip_td"]
    assert f'student={{"model": "{demo.vl_student()}"}}' in cmd
    assert "budget.steps=150" in cmd
