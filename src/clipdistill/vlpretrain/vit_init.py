"""`student.init: SPEC`: the ViLT's transformer starts as a CLIP's ViT image tower.

ViLT (Kim et al. 2021; dandelin/ViLT, vilt/modules/vilt_module.py) builds its single-stream transformer as a
timm ViT-B/32 and loads ImageNet weights into it; only the text embeddings, the modality (token type) embeddings,
the pooler and the heads start at random. Here the ViT is the image tower of an open_clip CLIP (e.g. one trained
on the world by `distill`), mapped key for key onto a transformers `ViltModel` (transformers 5.25
`models/vilt/modeling_vilt.py`; open_clip 3.3.0 `transformer.py` `VisionTransformer` / `ResidualAttentionBlock`):

    conv1 (no bias)                  -> embeddings.patch_embeddings.projection (bias 0)
    class_embedding [D]              -> embeddings.cls_token [1, 1, D]
    positional_embedding [1 + N, D]  -> embeddings.position_embeddings [1, 1 + N, D] (same row-major grid; ViLT
                                        interpolates it bilinearly with align_corners to the grid it already has,
                                        which leaves it as it is)
    resblocks.i.ln_1 / ln_2          -> encoder.layer.i.layernorm_before / layernorm_after
    resblocks.i.attn.in_proj_*       -> encoder.layer.i.attention.attention.query / key / value (thirds, q k v)
    resblocks.i.attn.out_proj        -> encoder.layer.i.attention.output.dense
    resblocks.i.mlp.c_fc / c_proj    -> encoder.layer.i.intermediate.dense / output.dense
    ln_post                          -> layernorm
    modality (token type) embeddings -> 0, so an image token enters the encoder as the tower's token does

Both blocks compute x + attn(ln_1(x)), then x + mlp(ln_2(x)), so the image-only pass gives the tower's tokens
after ln_post (tests/vlpretrain/test_vit_init.py, to 1e-5). Not copied: `proj` (ViLT has no joint space), the
text tower. A tower this mapping cannot reproduce exactly is refused, one reason per line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clipdistill.errors import ConfigError

# StudentArch keys the tower fixes (the text side, max_text_len, and dropout stay the student's own)
TOWER_KEYS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "image_size", "patch_size",
              "activation", "layer_norm_eps")


@dataclass(frozen=True)
class TowerInit:
    """What `student.init` names, read once: the architecture it fixes and the ViltModel tensors it gives."""

    spec: str  # canonical (local paths absolute)
    weights_sha256: str  # ClipModel.weights_hash() of the whole CLIP, as other manifests record a model
    arch: dict  # TOWER_KEYS -> value
    image_mean: tuple[float, ...]  # the CLIP's normalisation: the ViLT's image processor takes it over
    image_std: tuple[float, ...]
    state: dict[str, torch.Tensor]  # ViltModel state dict keys -> tensors

    def record(self) -> dict:
        """For the manifest and RUN/hf/init_from.json."""
        return {"spec": self.spec, "weights_sha256": self.weights_sha256, "tower": dict(self.arch),
                "image_mean": list(self.image_mean), "image_std": list(self.image_std),
                "copied": "conv1, class and positional embeddings, every block, ln_post (modality embeddings 0)",
                "tensors": len(self.state)}


def _activation(act: nn.Module, where: str) -> str:
    from open_clip.transformer import QuickGELU

    if type(act) is QuickGELU:  # x * sigmoid(1.702 x): transformers' QuickGELUActivation, the same formula
        return "quick_gelu"
    if type(act) is nn.GELU and act.approximate == "none":  # transformers' "gelu" is F.gelu (erf)
        return "gelu"
    raise ConfigError(f"{where}: its MLP activation {act!r} has no exact transformers ViLT hidden_act "
                      "(nn.GELU() maps to gelu, open_clip's QuickGELU to quick_gelu)")


def _layer_norm_eps(v: nn.Module, where: str) -> float:
    norms = [m for m in v.modules() if isinstance(m, nn.LayerNorm)]
    eps = {m.eps for m in norms}
    if len(eps) != 1:
        raise ConfigError(f"{where}: its LayerNorms use several eps values {sorted(eps)}; ViLT has one "
                          "(layer_norm_eps)")
    if any(m.weight is None or m.bias is None for m in norms):
        raise ConfigError(f"{where}: a LayerNorm without weight and bias (norm_kwargs); ViLT's have both")
    return eps.pop()


def vision_tower(model: nn.Module, where: str) -> nn.Module:
    """The open_clip `VisionTransformer` of a zoo ClipModel, refused (ConfigError, one line naming the reason)
    when its forward is not exactly a ViltModel's image-only pass."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    inner = getattr(model, "inner", model)
    v = getattr(inner, "visual", None)
    if not isinstance(v, VisionTransformer):
        got = type(v).__name__ if v is not None else f"{type(inner).__name__} (not an open_clip model)"
        raise ConfigError(f"{where}: its image tower is {got}, not an open_clip VisionTransformer; ViLT's "
                          "transformer is a ViT, so only an open_clip ViT tower maps onto it")
    if not isinstance(v.ln_pre, nn.Identity):
        raise ConfigError(f"{where}: its tower has ln_pre (a LayerNorm before the first block) and ViLT has no "
                          "pre-LayerNorm, so the copy is exact only for towers built with open_clip's "
                          "vision_cfg.no_ln_pre: true (e.g. open_clip:cd-student-s-32-vilt)")
    if v.attn_pool is not None:
        raise ConfigError(f"{where}: its tower has an attentional pooler (attentional_pool); ViLT has none")
    blocks = list(v.transformer.resblocks)
    if not all(type(b) is ResidualAttentionBlock for b in blocks):
        raise ConfigError(f"{where}: its blocks are {type(blocks[0]).__name__} (qk_norm / scaled cosine / scale_* "
                          "options); only open_clip's plain ResidualAttentionBlock maps onto ViLT's layers")
    if any(not isinstance(b.ls_1, nn.Identity) or not isinstance(b.ls_2, nn.Identity) for b in blocks):
        raise ConfigError(f"{where}: its blocks have layer scale (ls_init_value); ViLT's layers have none")
    for b in blocks:
        a = b.attn
        if not a._qkv_same_embed_dim or a.in_proj_bias is None or a.bias_k is not None or a.add_zero_attn:
            raise ConfigError(f"{where}: an attention layer that is not q/k/v thirds of one biased in_proj")
    if len({*v.image_size}) != 1 or len({*v.patch_size}) != 1:
        raise ConfigError(f"{where}: image {v.image_size} / patch {v.patch_size} not square; ViLT's are")
    return v


def tower_arch(v: nn.Module, where: str) -> dict:
    b = v.transformer.resblocks[0]
    return {"hidden_size": int(v.transformer.width), "num_layers": len(v.transformer.resblocks),
            "num_heads": int(b.attn.num_heads), "intermediate_size": int(b.mlp.c_fc.out_features),
            "image_size": int(v.image_size[0]), "patch_size": int(v.patch_size[0]),
            "activation": _activation(b.mlp.gelu, where), "layer_norm_eps": float(_layer_norm_eps(v, where))}


def vilt_state(v: nn.Module) -> dict[str, torch.Tensor]:
    """The tower's tensors under the ViltModel keys they go to (the mapping in the module docstring)."""
    d = int(v.transformer.width)
    out = {"embeddings.patch_embeddings.projection.weight": v.conv1.weight,
           "embeddings.patch_embeddings.projection.bias": torch.zeros(d),
           "embeddings.cls_token": v.class_embedding.reshape(1, 1, d),
           "embeddings.position_embeddings": v.positional_embedding.unsqueeze(0),
           "embeddings.token_type_embeddings.weight": torch.zeros(2, d),  # modality_type_vocab_size 2
           "layernorm.weight": v.ln_post.weight, "layernorm.bias": v.ln_post.bias}
    for i, b in enumerate(v.transformer.resblocks):
        p = f"encoder.layer.{i}."
        w, bias = b.attn.in_proj_weight.chunk(3), b.attn.in_proj_bias.chunk(3)  # nn.MultiheadAttention: q, k, v
        for j, name in enumerate(("query", "key", "value")):
            out[f"{p}attention.attention.{name}.weight"], out[f"{p}attention.attention.{name}.bias"] = w[j], bias[j]
        pairs = {"attention.output.dense": b.attn.out_proj, "layernorm_before": b.ln_1, "layernorm_after": b.ln_2,
                 "intermediate.dense": b.mlp.c_fc, "output.dense": b.mlp.c_proj}
        for name, m in pairs.items():
            out[f"{p}{name}.weight"], out[f"{p}{name}.bias"] = m.weight, m.bias
    return {k: t.detach().to("cpu", torch.float32).clone().contiguous() for k, t in out.items()}


def load_tower_init(spec: str) -> TowerInit:
    """Load `spec` (any zoo SPEC), check its tower, and read what the ViLT takes from it."""
    from clipdistill.zoo import load_model
    from clipdistill.zoo.spec import canonical_spec

    where = f"student.init {spec}"
    model = load_model(spec)
    v = vision_tower(model, where)
    return TowerInit(spec=canonical_spec(spec), weights_sha256=model.weights_hash(), arch=tower_arch(v, where),
                     image_mean=tuple(float(x) for x in model.image_mean),
                     image_std=tuple(float(x) for x in model.image_std), state=vilt_state(v))


def resolve_arch(arch, init: TowerInit):
    """`arch` (a StudentArch) with the tower's values; a key the config set itself to another value is refused,
    naming both (a key left at its default simply takes the tower's)."""
    clash = [f"student.{k}={getattr(arch, k)!r} but the tower has {init.arch[k]!r}" for k in TOWER_KEYS
             if k in arch.model_fields_set and getattr(arch, k) is not None and getattr(arch, k) != init.arch[k]]
    if clash:
        raise ConfigError(f"student.init {init.spec} fixes the architecture: {'; '.join(clash)} (leave these keys "
                          "out or set them to the tower's values)")
    return type(arch).model_validate({**arch.model_dump(), **init.arch})


@torch.no_grad()
def apply_init(vilt: nn.Module, init: TowerInit) -> None:
    """Copy the tower into `vilt` (a ViltModel built from the resolved arch); every mapped key must exist with
    the same shape, so a mapping that drifted from transformers' layout fails here, not in a wrong model."""
    params = dict(vilt.state_dict())
    missing = sorted(set(init.state) - set(params))
    wrong = [f"{k} {tuple(init.state[k].shape)} vs {tuple(params[k].shape)}" for k in init.state
             if k in params and init.state[k].shape != params[k].shape]
    if missing or wrong:
        raise ConfigError(f"student.init {init.spec}: the tower does not fit the ViltModel "
                          f"(missing {missing[:3]}, shapes {wrong[:3]})")
    for k, t in init.state.items():
        params[k].copy_(t)
