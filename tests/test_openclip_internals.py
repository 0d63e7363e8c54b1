"""`zoo.openclip_internals`, the one adapter into open_clip's ViT internals, against open_clip's own forward;
and the training loop's grad checkpointing through `ClipModel`'s public method."""

from __future__ import annotations

import pytest
import torch

from clipdistill.errors import UserError
from clipdistill.zoo import load_model
from clipdistill.zoo.openclip_internals import encode_kept_patches, vision_transformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("open_clip:cd-student-xs-32").eval()


def test_all_patches_kept_is_open_clips_forward(model):
    images = torch.randn(3, 3, model.image_size, model.image_size)
    with torch.no_grad():
        ours = encode_kept_patches(model, images, None)
        theirs = model.inner.visual(images)  # open_clip's VisionTransformer.forward itself
        every = torch.arange((model.image_size // model.inner.visual.conv1.kernel_size[0]) ** 2).expand(3, -1)
        ours_all = encode_kept_patches(model, images, every)
    assert ours.shape == theirs.shape == (3, model.embed_dim)
    assert torch.allclose(ours, theirs, atol=1e-5) and torch.allclose(ours_all, theirs, atol=1e-5)
    assert torch.allclose(theirs, model.encode_image(images), atol=1e-5)


def test_kept_patches_match_open_clip_on_the_same_subset(model):
    """Dropping patches is open_clip's forward with those patches' pixels absent: the same tokens, each at its
    own position, as open_clip's PatchDropout would keep them (compared with its `_embeds` output gathered)."""
    v = model.inner.visual
    images = torch.randn(2, 3, model.image_size, model.image_size)
    keep = torch.tensor([[0, 3, 5], [1, 2, 7]])
    with torch.no_grad():
        x = v.conv1(images).flatten(2).permute(0, 2, 1)
        x = torch.cat([v.class_embedding.expand(2, 1, -1), x], dim=1) + v.positional_embedding  # open_clip order
        x = torch.cat([x[:, :1], torch.gather(x[:, 1:], 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))], 1)
        pooled, _ = v._pool(v.transformer(v.ln_pre(x)))
        reference = pooled @ v.proj
        ours = encode_kept_patches(model, images, keep)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert not torch.allclose(ours, model.encode_image(images), atol=1e-3)  # the masking is really applied


def test_accepts_model_clip_or_tower_and_refuses_others(model):
    assert vision_transformer(model) is vision_transformer(model.inner) is vision_transformer(model.inner.visual)
    with pytest.raises(UserError, match="open_clip VisionTransformer"):
        vision_transformer(torch.nn.Linear(2, 2))


def test_loop_grad_checkpointing_goes_through_the_model(model):
    from clipdistill.train.loop import enable_grad_checkpointing

    m = load_model("open_clip:cd-student-xs-32")
    enable_grad_checkpointing({"student": m, "loss": torch.nn.Linear(2, 2)})
    assert m.inner.visual.transformer.grad_checkpointing and m.inner.transformer.grad_checkpointing
    with pytest.raises(UserError, match="module 'head'.*cannot do it"):
        enable_grad_checkpointing({"head": torch.nn.Linear(2, 2)})
