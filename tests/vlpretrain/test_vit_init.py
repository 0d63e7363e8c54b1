"""`student.init`: a ViLT whose transformer is a CLIP's open_clip ViT tower. The ViltModel's image-only pass gives
the tower's tokens after ln_post; every tower the mapping cannot reproduce is refused, naming why; a short run
writes a folder that `load_folder` and td's `hf:DIR` student read back, with its init recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from vlp_helpers import cli, tiny_config

from clipdistill.errors import ConfigError
from clipdistill.safeload import load_tensors, save_tensors
from clipdistill.vlpretrain.config import StudentArch, VLPretrainConfig
from clipdistill.vlpretrain.model import ImageTransform, ViltPretrainer, load_folder, vilt_config
from clipdistill.vlpretrain.text import build_wordpiece
from clipdistill.vlpretrain.vit_init import apply_init, load_tower_init, resolve_arch
from clipdistill.zoo import load_model

VISION = {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 8, "no_ln_pre": True}


def tower_spec(folder: Path, name: str = "t", quick_gelu: bool = False, **vision) -> str:
    """An open_clip JSON config (vision_cfg = VISION + `vision`) with random weights, every tensor perturbed
    (LayerNorms and biases too, so a swapped or dropped one shows), as `open_clip:CFG.json@WEIGHTS`."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"embed_dim": 24, "vision_cfg": {**VISION, **vision},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
           **({"quick_gelu": True} if quick_gelu else {})}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg))
    model = load_model(f"open_clip:{path}")
    g = torch.Generator().manual_seed(0)
    state = {k: v + 0.2 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in model.inner.state_dict().items()}
    save_tensors({k: v.contiguous() for k, v in state.items()}, folder / f"{name}.safetensors")
    return f"open_clip:{path}@{folder / f'{name}.safetensors'}"


def vilt_from(spec: str, tmp_path: Path, **arch):
    init = load_tower_init(spec)
    tok = build_wordpiece(["a red circle", "a blue square on the left"], 64, tmp_path / "tok")
    resolved = resolve_arch(StudentArch(max_text_len=16, dropout=0.0, **arch), init)
    model = ViltPretrainer(vilt_config(resolved, tok)).eval()
    apply_init(model.vilt, init)
    return model, init, resolved


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu"])
def test_image_only_pass_is_the_towers_forward(tmp_path, quick_gelu):
    spec = tower_spec(tmp_path, quick_gelu=quick_gelu)
    model, init, arch = vilt_from(spec, tmp_path)
    assert (arch.hidden_size, arch.num_layers, arch.num_heads, arch.intermediate_size) == (32, 2, 4, 128)
    assert (arch.image_size, arch.patch_size, arch.layer_norm_eps) == (16, 4, 1e-5)
    assert arch.activation == ("quick_gelu" if quick_gelu else "gelu") and arch.max_text_len == 16
    clip = load_model(spec)
    v = clip.inner.visual
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(3)]
    # the ViLT reads an image as the CLIP does: its normalisation is taken over
    px = torch.stack([ImageTransform(16, 4, init.image_mean, init.image_std)(im) for im in images])
    assert torch.allclose(px, torch.stack([clip.eval_transform(im) for im in images]), atol=1e-6)
    assert init.image_mean == tuple(clip.image_mean) != (0.5, 0.5, 0.5)
    b, grid = len(images), 4
    with torch.no_grad():
        want = v.ln_post(v.transformer(v._embeds(px)))  # [B, 1 + 16, 32]: every token after ln_post
        mask = torch.ones(b, 16, 16, dtype=torch.long)
        torch.manual_seed(0)  # ViltModel draws its patch order: the same draw twice gives the order it used
        got = model.vilt(input_ids=torch.zeros(b, 0, dtype=torch.long), attention_mask=torch.ones(b, 0),
                         pixel_values=px, pixel_mask=mask).last_hidden_state
        torch.manual_seed(0)
        _, _, (patch_index, _) = model.vilt.embeddings.visual_embed(px, mask, max_image_length=-1)
        pooled, _ = clip.encode_image_tokens(px)
    order = patch_index[..., 0] * grid + patch_index[..., 1]  # each ViLT token's (row, col) in the tower's grid
    assert sorted(order[0].tolist()) == list(range(grid * grid))
    tokens = torch.gather(want[:, 1:], 1, order.unsqueeze(-1).expand(-1, -1, 32))
    assert torch.allclose(got[:, 0], want[:, 0], atol=1e-5)  # the CLS
    assert torch.allclose(got[:, 1:], tokens, atol=1e-5)
    assert torch.allclose(got[:, 0] @ v.proj, pooled, atol=1e-5)  # and the CLIP's image embedding from it


def test_unset_arch_keys_take_the_towers_and_a_disagreeing_one_is_refused(tmp_path):
    spec = tower_spec(tmp_path)
    _, init, arch = vilt_from(spec, tmp_path, num_layers=2, image_size=16)  # set, and the tower's values
    assert arch.hidden_size == 32 and arch.dropout == 0.0
    with pytest.raises(ConfigError, match=r"student.hidden_size=64 but the tower has 32.*student.patch_size=8 but "
                       r"the tower has 4"):
        resolve_arch(StudentArch(hidden_size=64, patch_size=8), init)
    with pytest.raises(ConfigError, match=r"student.layer_norm_eps=1e-12 but the tower has 1e-05"):
        resolve_arch(StudentArch(layer_norm_eps=1e-12), init)
    with pytest.raises(ValueError, match="student.init"):
        VLPretrainConfig.model_validate({"student": {"init": "clip:nothing"}, "data": {"source": "x.csv"}})


REFUSED = [
    ("ln_pre", {"no_ln_pre": False}, "has ln_pre .* ViLT has no pre-LayerNorm.*vision_cfg.no_ln_pre: true"),
    ("layer_scale", {"ls_init_value": 0.1}, "layer scale"),
    ("attentional_pool", {"attentional_pool": True, "attn_pooler_heads": 2, "attn_pooler_queries": 4},
     "attentional pooler"),
    ("custom_block", {"qk_norm": True}, "CustomResidualAttentionBlock"),
    ("tanh_gelu", {"act_kwargs": {"approximate": "tanh"}}, "no exact transformers ViLT hidden_act"),
]


@pytest.mark.parametrize("vision, message", [pytest.param(v, m, id=i) for i, v, m in REFUSED])
def test_towers_the_mapping_cannot_reproduce_are_refused(tmp_path, vision, message):
    with pytest.raises(ConfigError, match=message):
        load_tower_init(tower_spec(tmp_path, **vision))


def test_non_vit_towers_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="image tower is ModifiedResNet, not an open_clip VisionTransformer"):
        load_tower_init("open_clip:cd-teacher-rn-64")
    timm = {"timm_model_name": "vit_tiny_patch16_224", "timm_proj": "linear"}
    with pytest.raises(ConfigError, match="image tower is TimmModel, not an open_clip VisionTransformer"):
        load_tower_init(tower_spec(tmp_path, **timm))
    sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the tiny HF CLIP folder builder of test_zoo.py
    from test_zoo import write_hf_clip_folder

    with pytest.raises(ConfigError, match=r"image tower is CLIPModel \(not an open_clip model\)"):
        load_tower_init(f"hf:{write_hf_clip_folder(tmp_path / 'hf')}")


def test_shipped_vilt_tower_maps(tmp_path):
    """The shipped `cd-student-s-32-vilt` is the shape of cd-student-s-32 without ln_pre, 4 heads."""
    init = load_tower_init("open_clip:cd-student-s-32-vilt")
    assert init.arch == {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512,
                         "image_size": 32, "patch_size": 4, "activation": "gelu", "layer_norm_eps": 1e-5}
    with pytest.raises(ConfigError, match="ln_pre"):
        load_tower_init("open_clip:cd-student-s-32")


def test_short_run_with_init_writes_a_folder_hf_and_load_folder_read(vlp_world, tmp_path):
    from clipdistill.td.hf_student import HFViltStudent

    spec = tower_spec(tmp_path / "tower")
    init = load_tower_init(spec)
    cfg = tiny_config(tmp_path / "cfg.yaml", f"world:{vlp_world}", train={"steps": 2, "save_every": 2})
    doc = yaml.safe_load(cfg.read_text())
    doc["student"] = {"init": spec}  # the architecture is the tower's
    cfg.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    proc = cli("vlpretrain", str(cfg), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["init"]["spec"] == init.spec and manifest["init"]["weights_sha256"] == init.weights_sha256
    assert json.loads((out / "hf" / "init_from.json").read_text()) == manifest["init"]
    assert manifest["student"]["hidden_size"] == 32 and manifest["student"]["hidden_act"] == "gelu"
    assert "init: " in (out / "config.yaml").read_text()
    model, _ = load_folder(out / "hf")
    weights = load_tensors(out / "checkpoints" / "step_0000002" / "model.safetensors")
    got = model.state_dict()
    assert all(torch.equal(got[k[len("student."):]], w) for k, w in weights.items())
    # two steps moved the copied weights, but only a little: the run started from the tower
    conv = got["vilt.embeddings.patch_embeddings.projection.weight"]
    start = init.state["embeddings.patch_embeddings.projection.weight"]
    assert 0 < (conv - start).abs().max() < 0.05
    student = HFViltStudent(f"hf:{out / 'hf'}", 40)
    assert student.image_mean == init.image_mean and student.image_std == init.image_std
    assert (student.grid, student.width, student.vilt.config.layer_norm_eps) == (4, 32, 1e-5)
