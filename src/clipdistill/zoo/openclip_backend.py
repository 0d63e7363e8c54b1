"""open_clip models: our shipped architectures, open_clip's own, JSON configs, and checkpoints."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transform import PreprocessCfg, image_transform_v2
from open_clip.transformer import text_global_pool
from torch import nn

from clipdistill.errors import UserError
from clipdistill.safeload import load_tensors
from clipdistill.zoo.base import ClipModel, eos_mask

CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
_registered = False


def register_shipped_configs() -> None:
    """Make our shipped architectures known to open_clip by name (once per process)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def shipped_archs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def read_arch_config(arch: str) -> tuple[str, dict]:
    """(name, open_clip config dict) for an architecture name or a JSON config path."""
    register_shipped_configs()
    path = Path(arch)
    if arch.endswith(".json") or path.is_file():
        if not path.is_file():
            raise UserError(f"open_clip config file not found: {arch}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{arch}: not valid JSON ({e})") from None
        if not {"embed_dim", "vision_cfg", "text_cfg"} <= set(cfg):
            raise UserError(f"{arch}: an open_clip config needs embed_dim, vision_cfg and text_cfg")
        return path.stem, cfg
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `clipdistill models list`."
        raise UserError(f"unknown open_clip architecture {arch!r}.{hint}")
    return arch, cfg


def build_open_clip(name: str, cfg: dict) -> nn.Module:
    """Random-init open_clip model from a config dict (registered under `name` for the tokenizer)."""
    open_clip.factory._MODEL_CONFIGS.setdefault(name, cfg)
    if open_clip.factory._MODEL_CONFIGS[name] != cfg:  # a JSON file that shadows another config's name
        name = f"{name}-{abs(hash(json.dumps(cfg, sort_keys=True))) % 10**8}"
        open_clip.factory._MODEL_CONFIGS[name] = cfg
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly" on the root logger: expected here
    try:
        model = open_clip.create_model(name, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    model.clipdistill_arch_name = name
    return model


class OpenClipModel(ClipModel):
    def __init__(self, inner: nn.Module, spec: str, arch: str, config: dict):
        super().__init__(inner)
        self.spec, self.arch, self.arch_config = spec, arch, config
        self.embed_dim = int(config["embed_dim"])
        pp = dict(inner.visual.preprocess_cfg)
        size = pp["size"]
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.image_mean, self.image_std = tuple(pp["mean"]), tuple(pp["std"])
        self.train_transform = image_transform_v2(PreprocessCfg(**pp), is_train=True)
        self.eval_transform = image_transform_v2(PreprocessCfg(**pp), is_train=False)
        self.tokenizer = open_clip.get_tokenizer(inner.clipdistill_arch_name)
        self.context_length = int(getattr(self.tokenizer, "context_length",
                                          config["text_cfg"].get("context_length", 77)))
        self.eos_id = int(getattr(self.tokenizer, "eot_token_id", 49407))

    # the text tower lives on the model itself (CLIP) or under .text (CustomTextCLIP)
    @property
    def _text(self) -> nn.Module:
        return getattr(self.inner, "text", self.inner)

    def encode_image(self, images, normalize=False):
        return self.inner.encode_image(images, normalize=normalize)

    def encode_text(self, ids, normalize=False):
        return self.inner.encode_text(ids, normalize=normalize)

    def encode_image_tokens(self, images):
        v = self.inner.visual
        if isinstance(v, ModifiedResNet) and v.attnpool is not None:
            return resnet_tokens(v, images)
        if not hasattr(v, "_embeds"):
            raise UserError(f"{self.spec}: per-token image features need an open_clip ViT or ModifiedResNet tower")
        x = v.transformer(v._embeds(images))
        pooled, tokens = v._pool(x)
        if v.proj is not None:
            pooled, tokens = pooled @ v.proj, tokens @ v.proj
        return pooled, tokens

    def encode_text_tokens(self, ids):
        t = self._text
        if not hasattr(t, "token_embedding") or getattr(t, "cls_emb", None) is not None:
            raise UserError(f"{self.spec}: per-token text features need a standard open_clip text transformer")
        cast = t.transformer.get_cast_dtype()
        x = t.token_embedding(ids).to(cast) + t.positional_embedding.to(cast)
        x = t.ln_final(t.transformer(x, attn_mask=t.attn_mask))
        pool_type = getattr(t, "text_pool_type", getattr(t, "pool_type", "argmax"))
        eos = getattr(t, "text_eos_id", getattr(t, "eos_id", None))
        pooled = text_global_pool(x, ids, pool_type, eos_token_id=eos)
        proj = t.text_projection
        if isinstance(proj, nn.Linear):
            pooled, x = proj(pooled), proj(x)
        elif proj is not None:
            pooled, x = pooled @ proj, x @ proj
        return pooled, x, eos_mask(ids, self.eos_id)

    @property
    def raw_logit_scale(self):
        return self.inner.logit_scale

    def visual_parameters(self):
        return list(self.inner.visual.parameters())


def resnet_tokens(v: ModifiedResNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, D], grid tokens [B, HW, D]) of a CLIP ResNet, both in the joint space.

    The attention pool already computes an output for every query position (mean token + the final
    feature map's cells) and keeps only the first; the other cells' outputs are the per-patch features
    (as in dense-CLIP work), so the pooled vector is exactly `encode_image`. A 64 px input gives a 2x2 grid.
    """
    x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(images)))))
    p = v.attnpool
    x = x.flatten(2).permute(2, 0, 1)  # NCHW -> (HW)NC
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0) + p.positional_embedding[:, None, :].to(x.dtype)
    x, _ = F.multi_head_attention_forward(  # the same call as open_clip's AttentionPool2d.forward
        query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=p.num_heads,
        q_proj_weight=p.q_proj.weight, k_proj_weight=p.k_proj.weight, v_proj_weight=p.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([p.q_proj.bias, p.k_proj.bias, p.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=p.c_proj.weight, out_proj_bias=p.c_proj.bias,
        use_separate_proj_weight=True, training=p.training, need_weights=False,
    )
    return x[0], x[1:].transpose(0, 1)


def apply_state(inner: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a state dict strictly, with a message that names the mismatch instead of a torch traceback."""
    own = inner.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if bad:
        k = bad[0]
        raise UserError(f"{where}: weights for another architecture "
                        f"({k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    missing, unexpected = inner.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]  # buffer that differs across versions
    if missing or unexpected:
        shown = (missing + unexpected)[:6]
        raise UserError(
            f"{where}: weights do not fit this architecture "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys, e.g. {shown})"
        )


def load_open_clip(spec: str, arch: str, checkpoint: str | None) -> OpenClipModel:
    name, cfg = read_arch_config(arch)
    inner = build_open_clip(name, cfg)
    if checkpoint:
        apply_state(inner, student_weights(load_tensors(checkpoint)), f"{spec}")
    return OpenClipModel(inner, spec, name, cfg)


TRAINING_CKPT_PREFIX = "student.inner."  # how `distill` checkpoints name the student (beside loss modules)


def student_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's own weights when `state` is a `distill` training checkpoint, else `state` unchanged.

    Lets `open_clip:ARCH@RUN/checkpoints/step_N/model.safetensors` evaluate a run mid-training.
    """
    n = len(TRAINING_CKPT_PREFIX)
    own = {k[n:]: v for k, v in state.items() if k.startswith(TRAINING_CKPT_PREFIX)}
    return own or state


