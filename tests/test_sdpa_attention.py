"""zoo.sdpa_attention: the copy-free training forward matches nn.MultiheadAttention (outputs and gradients) for
every mask form open_clip passes, and the swap changes no weight, key or non-training path."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from torch import nn

from clipdistill.zoo import load_model
from clipdistill.zoo.openclip_backend import build_open_clip
from clipdistill.zoo.sdpa_attention import SdpaMultiheadAttention, use_sdpa_attention

B, L, D, H = 3, 7, 16, 2


def pair(batch_first=True, **kw):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(D, H, batch_first=batch_first, **kw)
    new = copy.deepcopy(ref)
    assert use_sdpa_attention(new) == 1 and type(new) is SdpaMultiheadAttention
    return ref.train(), new.train()


def causal(n=L):
    return torch.full((n, n), float("-inf")).triu_(1)


def pad_bool():
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[0, 5:] = True  # the first sequence's last two keys are padding
    pad[2, 3:] = True
    return pad


def run(m, x, kv=None, **kw):
    x = x.clone().requires_grad_(True)
    kv = x if kv is None else kv
    out, _ = m(x, kv, kv, need_weights=False, **kw)
    out.pow(2).sum().backward()
    grads = [x.grad] + [p.grad for p in m.parameters()]
    return out, grads


def assert_same(ref, new, x, kv=None, **kw):
    o1, g1 = run(ref, x, kv, **kw)
    o2, g2 = run(new, x, kv, **kw)
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


MASKS = {
    "none": lambda: {},
    "causal float (open_clip text)": lambda: {"attn_mask": causal()},
    "causal bool": lambda: {"attn_mask": causal() == float("-inf")},
    # open_clip's embed_cls / pad-mask text: [B * heads, L, L] additive, causal + padding keys at -inf
    "3-d additive per head": lambda: {"attn_mask": (causal() + torch.zeros(B, L, L).masked_fill_(
        pad_bool()[:, None, :], float("-inf"))).repeat_interleave(H, 0)},
    "key_padding bool": lambda: {"key_padding_mask": pad_bool()},
    "key_padding float + causal": lambda: {"key_padding_mask": torch.zeros(B, L).masked_fill_(pad_bool(), -1e4),
                                           "attn_mask": causal()},
}


@pytest.mark.parametrize("mask", MASKS)
def test_self_attention_matches_torch(mask):
    ref, new = pair()
    assert_same(ref, new, torch.randn(B, L, D), **MASKS[mask]())


def test_sequence_first_and_cross_attention_match_torch():
    ref, new = pair(batch_first=False)
    assert_same(ref, new, torch.randn(L, B, D), attn_mask=causal())
    ref, new = pair()
    x, kv = torch.randn(B, L, D), torch.randn(B, 4, D)
    assert_same(ref, new, x, kv, key_padding_mask=torch.tensor([[False] * 3 + [True]] * B))


def test_eval_and_weights_calls_are_torch_own():
    ref, new = pair()
    x = torch.randn(B, L, D)
    ref.eval(), new.eval()
    with torch.no_grad():
        assert torch.equal(new(x, x, x, need_weights=False)[0], ref(x, x, x, need_weights=False)[0])
    ref.train(), new.train()
    o_ref, w_ref = ref(x, x, x, need_weights=True)
    o_new, w_new = new(x, x, x, need_weights=True)
    assert w_new is not None and torch.equal(w_new, w_ref) and torch.equal(o_new, o_ref)


def test_dropout_is_applied_in_training_only():
    _, new = pair(dropout=0.5)
    x = torch.randn(B, L, D)
    torch.manual_seed(1)
    a = new(x, x, x, need_weights=False)[0]
    torch.manual_seed(2)
    assert not torch.allclose(a, new(x, x, x, need_weights=False)[0])
    new.eval()
    assert torch.equal(new(x, x, x, need_weights=False)[0], new(x, x, x, need_weights=False)[0])


def test_uncovered_modules_are_left_alone():
    class Own(nn.MultiheadAttention):
        pass

    model = nn.ModuleList([nn.MultiheadAttention(D, H, kdim=8, vdim=8), nn.MultiheadAttention(D, H, bias=False),
                           nn.MultiheadAttention(D, H, add_bias_kv=True), Own(D, H), nn.Linear(D, D)])
    assert use_sdpa_attention(model) == 0
    assert [type(m) for m in model] == [nn.MultiheadAttention] * 3 + [Own, nn.Linear]
    assert use_sdpa_attention(nn.Sequential(nn.Linear(D, D))) == 0


# the second: open_clip's TextTransformer with a class token, whose mask is [B * heads, L, L] (causal + padding)
@pytest.mark.parametrize("text_cfg", [{}, {"embed_cls": True, "pool_type": "last"}])
def test_open_clip_model_same_weights_and_training_step(text_cfg):
    cfg = {"embed_dim": 32, "custom_text": bool(text_cfg),
           "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
           "text_cfg": {"context_length": 12, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2, **text_cfg}}
    torch.manual_seed(0)
    new = build_open_clip(f"test-sdpa-{len(text_cfg)}", cfg)
    assert sum(type(m) is SdpaMultiheadAttention for m in new.modules()) == 4
    ref = copy.deepcopy(new)
    for m in ref.modules():
        if type(m) is SdpaMultiheadAttention:
            m.__class__ = nn.MultiheadAttention
    sd_new, sd_ref = new.state_dict(), ref.state_dict()
    assert list(sd_new) == list(sd_ref) and all(torch.equal(sd_new[k], sd_ref[k]) for k in sd_ref)
    assert any(k.endswith("attn.in_proj_weight") for k in sd_new)
    images = torch.randn(4, 3, 32, 32)
    ids = torch.tensor([[1, 5, 9, 99, 0, 0, 0, 0, 0, 0, 0, 0]] * 2 + [[1, 7, 99] + [0] * 9, [1] * 11 + [99]])
    outs = []
    for m in (ref.train(), new.train()):
        out = {"image_features": m.encode_image(images), "text_features": m.encode_text(ids)}
        (out["image_features"].pow(2).sum() + out["text_features"].pow(2).sum()).backward()
        outs.append(out)
    for k in ("image_features", "text_features"):
        torch.testing.assert_close(outs[1][k], outs[0][k], atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(ref.named_parameters(), new.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_zoo_models_get_it_and_open_clip_reads_their_weights():
    m = load_model("open_clip:cd-student-xs-32")
    assert any(type(x) is SdpaMultiheadAttention for x in m.inner.modules())
    plain = open_clip.create_model("cd-student-xs-32")
    assert not any(type(x) is SdpaMultiheadAttention for x in plain.modules())
    plain.load_state_dict(m.inner.state_dict())  # strict: the same keys both ways


def test_autocast_and_grad_checkpointing_paths():
    ref, new = pair()
    x = torch.randn(B, L, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # q/k/v bf16, the fp32 causal mask cast to match
        o_ref = ref(x, x, x, need_weights=False, attn_mask=causal())[0]
        o_new = new(x, x, x, need_weights=False, attn_mask=causal())[0]
    assert o_new.dtype == o_ref.dtype == torch.bfloat16
    torch.testing.assert_close(o_new.float(), o_ref.float(), atol=2e-2, rtol=2e-2)
    model = load_model("open_clip:cd-student-xs-32").train()
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if type(m) is SdpaMultiheadAttention:
            m.__class__ = nn.MultiheadAttention
    model.set_grad_checkpointing(True)
    ids = model.tokenizer(["a red square", "blue"])
    for m in (plain, model):
        m.encode_text(ids).pow(2).sum().backward()
    for p, q in zip(plain.parameters(), model.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4)
