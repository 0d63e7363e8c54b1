"""TinyCLIP manual weight inheritance: a student starts from a teacher's weights
(docs/reconstruction.md#tinyclip-inherit).

Depth: student layer i of each tower takes teacher layer `i * (L_t // L_s)` (`interval_front`, TinyCLIP's
code) or `floor(i * L_t / L_s)` (`even`, spread over the whole depth; our option). Width: every tensor keeps
its *leading* slice; attention `in_proj` is viewed as (3, heads, head_dim, in) so the first heads (and the
leading part of each head) are kept, as in TinyCLIP's `weight_inherit.py`. Only possible when every student
dimension is <= the teacher's and the image geometry (patch size, token grid) is the same.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch import nn

from clipdistill.errors import UserError

LayerRule = Literal["interval_front", "even"]
_BLOCK = re.compile(r"^(.*?resblocks)\.(\d+)\.(.*)$")
# image geometry (patch kernel, token grid): slicing these would scramble it, so they must match
_SPATIAL = {"visual.conv1.weight": lambda s: s[-2:], "visual.positional_embedding": lambda s: s[:-1]}


def layer_map(n_student: int, n_teacher: int, rule: LayerRule) -> list[int]:
    if n_student > n_teacher:
        raise UserError(f"weight inheritance: the student has more layers ({n_student}) than the teacher ({n_teacher})")
    if rule == "interval_front":
        return [i * (n_teacher // n_student) for i in range(n_student)]
    return [i * n_teacher // n_student for i in range(n_student)]


def _depths(names: list[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for name in names:
        if m := _BLOCK.match(name):
            depth[m.group(1)] = max(depth.get(m.group(1), 0), int(m.group(2)) + 1)
    return depth


def _heads(model: nn.Module) -> dict[str, int]:
    return {f"{n}.in_proj_weight": m.num_heads for n, m in model.named_modules()
            if isinstance(m, nn.MultiheadAttention)}


def _leading(t: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    if len(t.shape) != len(shape) or any(s > d for s, d in zip(shape, t.shape, strict=True)):
        raise UserError(f"weight inheritance: {name} is {tuple(shape)} in the student but {tuple(t.shape)} in the "
                        "teacher; every student dimension must be <= the teacher's")
    return t[tuple(slice(0, s) for s in shape)]


def _attention(t: torch.Tensor, shape: torch.Size, heads_t: int, heads_s: int) -> torch.Tensor:
    """in_proj weight [3*W, W_in] or bias [3*W]: keep the first heads and the leading part of each."""
    w_t, w_s = t.shape[0] // 3, shape[0] // 3
    hd_t, hd_s = w_t // heads_t, w_s // heads_s
    if heads_s > heads_t or hd_s > hd_t:
        raise UserError(f"weight inheritance: student attention ({heads_s} heads x {hd_s}) does not fit in the "
                        f"teacher's ({heads_t} x {hd_t})")
    rest = t.shape[1:]
    x = t.reshape(3, heads_t, hd_t, *rest)[:, :heads_s, :hd_s]
    x = x.reshape(3 * w_s, *rest)
    return x[(slice(None), *(slice(0, s) for s in shape[1:]))] if rest else x


def _check_open_clip(model: nn.Module, state: dict, role: str) -> None:
    """Inheritance maps open_clip's parameter names (`visual.transformer.resblocks.N...`); a transformers
    CLIPModel (`hf:`) names its layers `vision_model.encoder.layers.N...` and has nothing under those names."""
    if any(k.startswith(("vision_model.", "text_model.")) for k in state):
        raise UserError(f"weight inheritance (student.init=inherit) needs an open_clip-architecture {role} "
                        "(open_clip:ARCH@WEIGHTS, open_clip:hf-hub:ORG/NAME or run:DIR); this one is a Hugging Face "
                        f"CLIPModel ({type(model).__name__}, hf:), whose layer naming inheritance does not map. Use "
                        "the same weights in open_clip form, or student.init=random")


def inherit_weights(student: nn.Module, teacher: nn.Module, rule: LayerRule = "interval_front") -> dict[str, int]:
    """Copy teacher weights into `student` (both open_clip CLIP modules, e.g. `ClipModel.inner`) in place.
    Returns {"tensors": copied, "layers_<tower>": student depth} for the run manifest."""
    t_state, s_state = teacher.state_dict(), student.state_dict()
    _check_open_clip(teacher, t_state, "teacher")
    _check_open_clip(student, s_state, "student")
    for name, geometry in _SPATIAL.items():
        if name in s_state and name in t_state and geometry(s_state[name].shape) != geometry(t_state[name].shape):
            raise UserError(f"weight inheritance needs the teacher's image geometry: {name} is "
                            f"{tuple(s_state[name].shape)} vs {tuple(t_state[name].shape)}")
    s_depth, t_depth = _depths(list(s_state)), _depths(list(t_state))
    for tower in s_depth:
        if tower not in t_depth:
            raise UserError(f"weight inheritance: the student has transformer blocks {tower}.* but the teacher has "
                            "none there (its tower is of another kind, e.g. a ResNet or timm/HF tower)")
    maps = {tower: layer_map(n, t_depth[tower], rule) for tower, n in s_depth.items()}
    s_heads, t_heads = _heads(student), _heads(teacher)
    new: dict[str, torch.Tensor] = {}
    for name, target in s_state.items():
        source = name
        if m := _BLOCK.match(name):
            source = f"{m.group(1)}.{maps[m.group(1)][int(m.group(2))]}.{m.group(3)}"
        if source not in t_state:
            raise UserError(f"weight inheritance: the teacher has no {source} (architectures differ in kind)")
        t = t_state[source]
        weight_key = source.replace("in_proj_bias", "in_proj_weight")
        if weight_key in t_heads and ("in_proj_weight" in source or "in_proj_bias" in source):
            s_key = name.replace("in_proj_bias", "in_proj_weight")
            t = _attention(t, target.shape, t_heads[weight_key], s_heads[s_key])
        new[name] = _leading(t, target.shape, name).to(target.dtype).clone()
    student.load_state_dict(new)
    return {"tensors": len(new), **{f"layers_{k}": len(v) for k, v in maps.items()}}
