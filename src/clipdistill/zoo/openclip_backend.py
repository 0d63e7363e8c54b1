"""open_clip models: our shipped architectures, open_clip's own, JSON configs, and checkpoints."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import set_model_preprocess_cfg
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import text_global_pool
from torch import nn

from clipdistill.errors import UserError
from clipdistill.safeload import load_tensors
from clipdistill.zoo.base import CappedTokenizer, ClipModel, eos_mask, load_exact_state, skip_weight_init
from clipdistill.zoo.sdpa_attention import use_sdpa_attention

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
        validate_config(cfg, arch)
        return path.stem, cfg
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else " See `clipdistill models list`."
        raise UserError(f"unknown open_clip architecture {arch!r}.{hint}")
    return arch, cfg


# Keys every config shipped with open_clip 3.3.0 carries (open_clip/model_configs/*.json). open_clip fills any
# missing one from its dataclass defaults, so a config without `vision_cfg.layers` would silently build a
# 12-layer tower: we require them instead. timm / HF towers take their shape from the named model.
_REQUIRED = {"": ("embed_dim", "vision_cfg", "text_cfg"), "vision_cfg": ("image_size", "layers", "width", "patch_size"),
             "text_cfg": ("context_length", "vocab_size", "width", "heads", "layers")}
_TOWER_BY_NAME = {"vision_cfg": "timm_model_name", "text_cfg": "hf_model_name"}
# top-level keys: the model classes' constructor arguments (CLIP / CustomTextCLIP / CoCa) + factory switches
_TOP_TYPES = {"embed_dim": int, "vision_cfg": dict, "text_cfg": dict, "quick_gelu": bool, "init_logit_scale": float,
              "init_logit_bias": float | None, "nonscalar_logit_scale": bool, "custom_text": bool,
              "multimodal_cfg": dict, "pad_id": int}


def _type_ok(value, tp) -> bool:
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args, strict=True))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, origin or tp)


def _type_name(tp) -> str:
    import typing

    if typing.get_origin(tp) is tuple:
        return f"a list of {len(typing.get_args(tp))} {typing.get_args(tp)[0].__name__}s"
    if typing.get_args(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else tp.__name__


def validate_config(cfg, where: str) -> None:
    """Check an open_clip model config against open_clip's own dataclasses (`CLIPVisionCfg`, `CLIPTextCfg`):
    unknown keys (with a close match), wrong types and missing required keys, each named by its path."""
    import dataclasses
    import difflib
    import typing

    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    def fail(msg: str):
        raise UserError(f"{where}: {msg}")

    def check(section: dict, types: dict, prefix: str, required: tuple[str, ...]) -> None:
        if not isinstance(section, dict):
            fail(f"{prefix.rstrip('.')} must be a JSON object")
        for key, value in section.items():
            path = f"{prefix}{key}"
            if key not in types:
                close = difflib.get_close_matches(key, list(types), n=1)
                hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                fail(f"{path} is not an open_clip config key{hint}")
            # open_clip's own configs write null for unused options (timm_proj, patch_size of a ResNet tower)
            if value is None and (key not in required or (key == "patch_size" and isinstance(section.get("layers"),
                                                                                          list))):
                continue
            if not _type_ok(value, types[key]):
                fail(f"{path} must be {_type_name(types[key])}, got {json.dumps(value)}")

    if not isinstance(cfg, dict):
        fail("an open_clip config is a JSON object with embed_dim, vision_cfg and text_cfg")
    check(cfg, _TOP_TYPES, "", _REQUIRED[""])
    sections = {"vision_cfg": typing.get_type_hints(CLIPVisionCfg), "text_cfg": typing.get_type_hints(CLIPTextCfg)}
    for name, types in sections.items():
        if name in cfg:
            fields = {f.name for f in dataclasses.fields(CLIPVisionCfg if name == "vision_cfg" else CLIPTextCfg)}
            check(cfg[name], {k: v for k, v in types.items() if k in fields}, f"{name}.", _REQUIRED[name])
    for name, keys in _REQUIRED.items():
        section = cfg if not name else cfg.get(name, {})
        if name and section.get(_TOWER_BY_NAME[name]):
            keys = ("image_size",) if name == "vision_cfg" else ()
        for key in keys:
            if key == "patch_size" and isinstance(section.get("layers"), list):  # a ResNet tower has none
                continue
            if key not in section:
                path = f"{name}.{key}" if name else key
                fail(f"missing {path} (open_clip would silently use its default; every open_clip config sets it)")


def build_open_clip(name: str, cfg: dict, init: bool = True) -> nn.Module:
    """Random-init open_clip model from a config dict (registered under `name` for the tokenizer). `init=False`:
    the initialisers are skipped, for a model whose every tensor `apply_state` then loads."""
    open_clip.factory._MODEL_CONFIGS.setdefault(name, cfg)
    if open_clip.factory._MODEL_CONFIGS[name] != cfg:  # a JSON file that shadows another config's name
        name = f"{name}-{abs(hash(json.dumps(cfg, sort_keys=True))) % 10**8}"
        open_clip.factory._MODEL_CONFIGS[name] = cfg
    logging.disable(logging.WARNING)  # open_clip warns "initialized randomly" on the root logger: expected here
    try:
        with nullcontext() if init else skip_weight_init():
            model = open_clip.create_model(name, pretrained=None)
    finally:
        logging.disable(logging.NOTSET)
    model.clipdistill_arch_name = name
    use_sdpa_attention(model)  # same weights and keys; a training forward without nn.MultiheadAttention's copies
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
        try:
            self.tokenizer = open_clip.get_tokenizer(inner.clipdistill_arch_name)
        except (OSError, ImportError, ValueError) as e:
            # SigLIP-family configs (hf_tokenizer_name, or "siglip" in the name) fetch their tokenizer from the Hub
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"{spec}: cannot load its tokenizer, which open_clip fetches from the Hugging Face Hub "
                            f"or the web and is not in the local cache ({type(e).__name__}: {first})") from None
        self.context_length = int(getattr(self.tokenizer, "context_length",
                                          config["text_cfg"].get("context_length", 77)))
        self.eos_id = int(getattr(self.tokenizer, "eot_token_id", 49407))
        self.tokenizer = CappedTokenizer(self.tokenizer, self.context_length)

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

    @property
    def logit_bias(self):
        # open_clip builds it from the config's `init_logit_bias` (its SigLIP archs); scalar, or [1] in some
        return getattr(self.inner, "logit_bias", None)

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
    """Load an open_clip state dict strictly (see `load_exact_state`)."""
    load_exact_state(inner, state, where, "this architecture")


def load_open_clip(spec: str, arch: str, checkpoint: str | None, download: bool = True) -> OpenClipModel:
    """`open_clip:ARCH`, `open_clip:ARCH@FILE`, `open_clip:ARCH@TAG` (open_clip's pretrained tags) and
    `open_clip:hf-hub:ORG/NAME`, the last two read from the Hugging Face cache (see `hub.py`)."""
    from clipdistill.zoo import hub

    if arch.startswith("hf-hub:"):
        return _load_hf_hub(spec, arch[len("hf-hub:"):], download)
    name, cfg = read_arch_config(arch)
    tag_cfg: dict = {}
    tag = checkpoint
    if checkpoint and not Path(checkpoint).exists() and not _looks_like_path(checkpoint):
        source, tag_cfg = hub.open_clip_tag_source(spec, name, checkpoint)
        checkpoint = str(hub.resolve(source, download)[0])
    inner = build_open_clip(name, cfg, init=not checkpoint)
    warnings_: list[str] = []
    if tag_cfg:
        # as open_clip's create_model: the tag's mean/std/interpolation/resize_mode override the arch's
        set_model_preprocess_cfg(inner, merge_preprocess_dict(dict(inner.visual.preprocess_cfg), tag_cfg))
        tag_qg, arch_qg = bool(tag_cfg.get("quick_gelu", False)), bool(cfg.get("quick_gelu", False))
        if tag_qg != arch_qg:
            # open_clip 3.3.0 only warns here; the weights still load but every MLP activation differs
            twin = f"{name}-quickgelu" if tag_qg else name.removesuffix("-quickgelu")
            hint = f"; open_clip:{twin}@{tag} is the architecture as trained" if twin in open_clip.list_models() \
                else ""
            warnings_.append(f"QuickGELU mismatch: {name} has quick_gelu={arch_qg} but tag {tag!r} was trained "
                             f"with quick_gelu={tag_qg}, so its features are not the released model's{hint}")
    if checkpoint:
        apply_state(inner, _converted(inner, student_weights(load_tensors(checkpoint))), f"{spec}")
    model = OpenClipModel(inner, spec, name, cfg)
    for w in warnings_:
        model.warn(w)
    return model


def _looks_like_path(s: str) -> bool:
    return "/" in s or "\\" in s or Path(s).suffix in (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _converted(inner: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's own `load_checkpoint` fix-ups (3.3.0) that do not change any weight: third-party layouts,
    scalar vs 1-d logit scale/bias, the text position_ids buffer older transformers saved."""
    from open_clip.convert import convert_state_dict

    state = convert_state_dict(inner, state)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(inner, key, None)
        if key in state and isinstance(own, torch.Tensor) and own.ndim != state[key].ndim:
            state[key] = state[key].reshape(own.shape)
    state.pop("text.transformer.embeddings.position_ids", None)
    return state


def _load_hf_hub(spec: str, repo_id: str, download: bool) -> OpenClipModel:
    from clipdistill.zoo import hub

    weights, extra = hub.resolve(hub.open_clip_hub_source(spec, repo_id), download)
    config_path = extra[hub.OPEN_CLIP_CONFIG]
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{spec}: {config_path} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise UserError(f"{spec}: {config_path} has no model_cfg (not an open_clip hf-hub repo?)")
    cfg = config["model_cfg"]
    validate_config(cfg, f"{spec} ({hub.OPEN_CLIP_CONFIG})")
    name = "hf-hub-" + repo_id.replace("/", "-")
    inner = build_open_clip(name, cfg, init=False)
    pp = config.get("preprocess_cfg") or {}
    if pp:
        set_model_preprocess_cfg(inner, merge_preprocess_dict(dict(inner.visual.preprocess_cfg), pp))
    apply_state(inner, _converted(inner, load_tensors(weights)), spec)
    return OpenClipModel(inner, spec, name, cfg)


TRAINING_CKPT_PREFIX = "student.inner."  # how `distill` checkpoints name the student (beside loss modules)


def student_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's own weights when `state` is a `distill` training checkpoint, else `state` unchanged.

    Lets `open_clip:ARCH@RUN/checkpoints/step_N/model.safetensors` evaluate a run mid-training.
    """
    n = len(TRAINING_CKPT_PREFIX)
    own = {k[n:]: v for k, v in state.items() if k.startswith(TRAINING_CKPT_PREFIX)}
    return own or state


