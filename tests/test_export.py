"""Export parity: open_clip reloads the exported student with identical embeddings; onnxruntime reproduces
both towers within 1e-4."""

import numpy as np
import open_clip
import pytest
import torch

from clipdistill.export import export_model
from clipdistill.zoo import load_model, save_run_model


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    save_run_model(load_model("open_clip:cd-student-xs-32"), run)
    return load_model(f"run:{run}")


def inputs(model):
    torch.manual_seed(1)
    return torch.randn(3, 3, model.image_size, model.image_size), model.tokenizer(["a red circle", "x", "two dogs"])


def test_open_clip_export_reloads_with_identical_embeddings(student, tmp_path):
    export_model(student, "open_clip", tmp_path)
    images, ids = inputs(student)
    with torch.no_grad():
        want_i, want_t = student.encode_image(images), student.encode_text(ids)
        local, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
        assert torch.equal(local.eval().encode_image(images), want_i)
        assert torch.equal(local.encode_text(ids), want_t)
        open_clip.add_model_config(tmp_path / "cd-student-xs-32.json")
        named, _, _ = open_clip.create_model_and_transforms(
            "cd-student-xs-32", pretrained=str(tmp_path / "open_clip_model.safetensors"))
        assert torch.equal(named.eval().encode_image(images), want_i)


def test_onnx_export_matches_onnxruntime(student, tmp_path):
    import onnxruntime as ort

    paths = export_model(student, "onnx", tmp_path)
    images, ids = inputs(student)
    with torch.no_grad():
        want = {"image": student.encode_image(images), "text": student.encode_text(ids)}
    for path, which, x in zip(paths, ("image", "text"), (images, ids), strict=True):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, want[which].numpy(), atol=1e-4, rtol=0)


def test_export_refuses_hf_like_models():
    from clipdistill.errors import UserError

    with pytest.raises(UserError, match="open_clip-architecture"):
        export_model(torch.nn.Linear(1, 1), "onnx", "unused")


def readme_snippet() -> str:
    """The README's open_clip loading snippet, exactly as written there."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "local-dir:" in b]
    assert len(blocks) == 1, "README should hold one open_clip loading snippet"
    return blocks[0]


def test_readme_open_clip_snippet_runs_as_written(student, tmp_path):
    """The snippet runs verbatim in a fresh interpreter of this venv (it imports open_clip before clipdistill)
    from a folder holding `exports/cid`, and the model it builds gives the student's embeddings."""
    import subprocess
    import sys

    export_model(student, "open_clip", tmp_path / "exports" / "cid")
    images, ids = inputs(student)
    torch.save({"images": images, "ids": ids}, tmp_path / "in.pt")
    check = ("\nimport torch\nx = torch.load('in.pt')\nwith torch.no_grad():\n"
             "    torch.save({'i': model.eval().encode_image(x['images']), 't': model.encode_text(x['ids']),\n"
             "                'tok': tokenizer(['a red circle', 'x', 'two dogs'])}, 'out.pt')\n")
    proc = subprocess.run([sys.executable, "-c", readme_snippet() + check], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "out.pt")
    with torch.no_grad():  # another process, another thread count: float sums may differ in the last bits
        assert torch.allclose(got["i"], student.encode_image(images), atol=1e-5, rtol=0)
        assert torch.allclose(got["t"], student.encode_text(ids), atol=1e-5, rtol=0)
    assert torch.equal(got["tok"], ids)


def test_onnx_metadata_props(student, tmp_path):
    import json

    import onnx

    image_path, text_path = export_model(student, "onnx", tmp_path)
    image = {p.key: p.value for p in onnx.load(str(image_path)).metadata_props}
    text = {p.key: p.value for p in onnx.load(str(text_path)).metadata_props}
    for meta in (image, text):
        assert meta["clipdistill.source_spec"] == student.spec and int(meta["embed_dim"]) == student.embed_dim
        assert float(meta["logit_scale"]) == pytest.approx(float(student.logit_scale.detach()))
    assert int(image["image_size"]) == student.image_size
    assert json.loads(image["image_mean"]) == pytest.approx(list(student.image_mean))
    assert json.loads(image["image_std"]) == pytest.approx(list(student.image_std))
    assert image["interpolation"] == "bicubic"
    assert int(text["context_length"]) == student.context_length == 32
    assert text["tokenizer"] == "open_clip.SimpleTokenizer" and int(text["eos_token_id"]) == 49407


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_weight_files_honour_the_umask(student, tmp_path, umask):
    """safetensors creates files 0600; written weights get 0o666 & ~umask like any other file."""
    import os
    import stat

    old = os.umask(umask)
    try:
        export_model(student, "open_clip", tmp_path / "e")
        save_run_model(student, tmp_path / "run")
    finally:
        os.umask(old)
    for path in (tmp_path / "e" / "open_clip_model.safetensors", tmp_path / "run" / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
