"""nn.MultiheadAttention's training forward without its copies, for the open_clip models zoo builds.

In training mode torch's nn.MultiheadAttention (what open_clip 3.3.0's ResidualAttentionBlock uses) takes its
Python path, `F.multi_head_attention_forward`: the packed in-projection is made contiguous per q/k/v, heads are
split through [L, B * H, hd] transposes and merged with `.contiguous()` before the output projection, ~13 `copy_`
calls per block and step. `SdpaMultiheadAttention` computes the same attention with one `F.linear` for q/k/v, the
head split as a strided view and `F.scaled_dot_product_attention` on [B, H, L, hd] (on CPU torch's flash kernel,
which reads strided q/k/v and writes its output [B, L, H, hd]-contiguous, so the merge is a view too). A full CPU
training step of `cd-student-s-64` / `s-32` is 6-8% faster at 2 threads (benchmarks/bench_attn.py, RESULTS.md).

It is a subclass that adds no state, swapped in by class (`use_sdpa_attention`): parameters, state_dict keys and
values, optimizer references and `isinstance(m, nn.MultiheadAttention)` stay as they were. Only the training
forward changes; eval mode (zero-shot, export, frozen teachers) and any call it does not cover (attention weights
asked for, `is_causal`) run nn.MultiheadAttention's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SdpaMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose training forward skips the copies. Masks keep nn.MultiheadAttention's
    convention: a bool `attn_mask` / `key_padding_mask` marks the keys NOT attended, a float one is added to the
    scores; a 3-d `attn_mask` is [B * heads, Lq, Lk]."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.training or need_weights or is_causal:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, lq, d = query.shape
        lk, h, hd = key.shape[1], self.num_heads, self.head_dim
        if key is query and value is query:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).view(b, lq, 3, h, hd).permute(
                2, 0, 3, 1, 4).unbind(0)
        else:
            w, bias = self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)
            q = F.linear(query, w[0], bias[0]).view(b, lq, h, hd).transpose(1, 2)
            k = F.linear(key, w[1], bias[1]).view(b, lk, h, hd).transpose(1, 2)
            v = F.linear(value, w[2], bias[2]).view(b, lk, h, hd).transpose(1, 2)
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, q.dtype)
            if mask.dim() == 3:
                mask = mask.view(b, h, lq, lk)
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, q.dtype).view(b, 1, 1, lk)
            mask = pad if mask is None else mask + pad
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(b, lq, d))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # cast to q's dtype as nn.MultiheadAttention does: under autocast q is bf16/fp16 while the mask is fp32
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    return mask.to(dtype)


def _covered(m: nn.Module) -> bool:
    # exactly torch's class (not a subclass with its own forward), packed in-projection with bias, no extras
    return (type(m) is nn.MultiheadAttention and m._qkv_same_embed_dim and m.in_proj_bias is not None
            and m.bias_k is None and m.bias_v is None and not m.add_zero_attn)


def use_sdpa_attention(model: nn.Module) -> int:
    """Swap every covered nn.MultiheadAttention in `model` to `SdpaMultiheadAttention` in place; the number
    swapped (0 for a model without one: a no-op)."""
    n = 0
    for m in model.modules():
        if _covered(m):
            m.__class__ = SdpaMultiheadAttention
            n += 1
    return n
