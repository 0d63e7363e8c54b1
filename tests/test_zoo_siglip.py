"""Sigmoid-loss (SigLIP) models load with their logit bias: open_clip configs with `init_logit_bias` and
transformers `SiglipModel` folders give the underlying model's embeddings, scale and bias."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from clipdistill.errors import UserError
from clipdistill.zoo import load_model, save_run_model
from siglip_models import CTX, HF_BIAS, HF_LOG_SCALE, write_hf_siglip_folder, write_open_clip_siglip_json


@pytest.fixture(scope="module")
def oc_json(tmp_path_factory):
    return write_open_clip_siglip_json(tmp_path_factory.mktemp("oc") / "tiny-sigmoid.json")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return write_hf_siglip_folder(tmp_path_factory.mktemp("hf") / "siglip")


def _inputs(model, n=3):
    torch.manual_seed(1)
    return torch.randn(n, 3, model.image_size, model.image_size), model.tokenizer(["a red square", "two cats", "a"][:n])


def test_open_clip_config_with_init_logit_bias_loads_the_bias(oc_json):
    torch.manual_seed(0)
    m = load_model(f"open_clip:{oc_json}")
    assert type(m.inner).__name__ == "CustomTextCLIP"
    assert m.logit_bias is m.inner.logit_bias and m.logit_bias.item() == -10.0
    images, ids = _inputs(m)
    with torch.no_grad():
        out = m(images, ids)
        assert torch.equal(out["image_features"], m.inner.encode_image(images))
        assert torch.equal(out["text_features"], m.inner.encode_text(ids))
        # open_clip's own forward: (image, text, logit_scale.exp(), logit_bias) for a model with a bias
        ref = m.inner(images, ids)
    assert len(ref) == 4 and out["logit_bias"] is ref[3]
    assert torch.equal(out["logit_scale"], ref[2])


def test_clip_models_have_no_bias_and_forward_keeps_its_keys():
    m = load_model("open_clip:cd-student-xs-32")
    assert m.logit_bias is None
    images, ids = _inputs(m, 2)
    with torch.no_grad():
        assert set(m(images, ids)) == {"image_features", "text_features", "logit_scale"}


def test_bias_survives_run_folder_and_training_checkpoint(oc_json, tmp_path):
    torch.manual_seed(0)
    m = load_model(f"open_clip:{oc_json}")
    with torch.no_grad():
        m.inner.logit_bias.fill_(-3.25)
        m.inner.logit_scale.fill_(math.log(10))
    save_run_model(m, tmp_path / "run")
    again = load_model(f"run:{tmp_path / 'run'}")
    assert again.logit_bias.item() == -3.25 and again.raw_logit_scale.item() == pytest.approx(math.log(10))
    state = {f"student.inner.{k}": v.contiguous() for k, v in m.inner.state_dict().items()}
    save_file(state | {"loss.sigmoid_bias": torch.tensor(0.0)}, str(tmp_path / "model.safetensors"))
    ckpt = load_model(f"open_clip:{oc_json}@{tmp_path / 'model.safetensors'}")
    assert ckpt.logit_bias.item() == -3.25


def test_hf_siglip_folder_matches_transformers(hf_folder):
    from transformers import AutoTokenizer, SiglipModel

    ours = load_model(f"hf:{hf_folder}")
    ref = SiglipModel.from_pretrained(str(hf_folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(hf_folder))
    texts = ["a photo of a cat", "two red circles"]
    enc = tok(texts, padding="max_length", max_length=CTX, return_tensors="pt")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ids = ours.tokenizer(texts)
        assert torch.equal(ids, enc["input_ids"])
        assert torch.allclose(ours.encode_image(pixels), ref.get_image_features(pixel_values=pixels).pooler_output,
                              atol=1e-6)
        assert torch.allclose(ours.encode_text(ids), ref.get_text_features(input_ids=ids).pooler_output, atol=1e-6)
        pooled, tokens, mask = ours.encode_text_tokens(ids)
        assert torch.allclose(pooled, ours.encode_text(ids), atol=1e-6) and tokens.shape == (2, CTX, 32)
        assert mask.sum(1).tolist() == [6, 4]  # up to and including </s>
        # SiglipModel's own logits: scale.exp() * cos + bias, with the scale unclamped
        out = ref(input_ids=ids, pixel_values=pixels)
        img, txt = ours.encode_image(pixels, normalize=True), ours.encode_text(ids, normalize=True)
        mine = ours.raw_logit_scale.exp() * img @ txt.T + ours.logit_bias
        assert torch.allclose(mine, out.logits_per_image, atol=1e-5)
    assert ours.logit_bias.item() == pytest.approx(HF_BIAS)
    assert ours.raw_logit_scale.exp().item() == pytest.approx(math.exp(HF_LOG_SCALE), rel=1e-6)
    assert ours.embed_dim == 32 and ours.image_size == 32 and ours.context_length == CTX


def test_hf_siglip_transform_follows_its_image_processor(hf_folder):
    """SiglipImageProcessor resizes straight to (h, w) (no crop) and normalises with mean = std = 0.5."""
    from transformers import SiglipImageProcessor

    ours = load_model(f"hf:{hf_folder}")
    im = Image.new("RGB", (64, 40))
    im.paste((200, 30, 30), (0, 0, 32, 40))
    im.paste((20, 220, 90), (32, 0, 64, 40))
    ref = SiglipImageProcessor.from_pretrained(str(hf_folder))(im, return_tensors="pt")["pixel_values"][0]
    got = ours.eval_transform(im)
    assert got.shape == ref.shape == (3, 32, 32)
    assert ours.image_mean == (0.5, 0.5, 0.5) and ours.image_std == (0.5, 0.5, 0.5)
    # resampling kernels differ by a few grey levels at the colour edge only (PIL vs torchvision resize)
    assert (got - ref).abs().mean() < 0.02


def test_hf_siglip_refuses_patch_tokens(hf_folder):
    ours = load_model(f"hf:{hf_folder}")
    with pytest.raises(UserError, match="attention head"):
        ours.encode_image_tokens(torch.randn(1, 3, 32, 32))


def test_hf_folder_of_another_model_type_names_both_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match="CLIPModel and SiglipModel"):
        load_model(f"hf:{tmp_path}")
