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
