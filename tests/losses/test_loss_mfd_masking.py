"""masked_encode_image really drops patch tokens of an open_clip ViT."""

from __future__ import annotations

import pytest
import torch

from clipdistill.errors import UserError
from clipdistill.losses import masked_encode_image
from clipdistill.losses.mfd import keep_indices
from clipdistill.zoo import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("open_clip:cd-student-xs-32").eval()  # 32 px, patch 4 -> 64 patches


def test_ratio_zero_equals_plain_forward(model):
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(masked_encode_image(model, images, 0.0), model.encode_image(images), atol=1e-5)


def test_masking_keeps_quarter_of_patches_and_changes_output(model):
    images = torch.randn(2, 3, 32, 32)
    seen = []
    hook = model.inner.visual.transformer.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    try:
        with torch.no_grad():
            masked = masked_encode_image(model, images, 0.75, torch.Generator().manual_seed(0))
            plain = model.encode_image(images)
    finally:
        hook.remove()
    assert seen[0] == (2, 1 + 16, 64)  # class token + 64 * (1 - 0.75) patches
    assert seen[1] == (2, 1 + 64, 64)
    assert masked.shape == plain.shape and not torch.allclose(masked, plain, atol=1e-3)


def test_masking_is_reproducible_and_accepts_inner_modules(model):
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = masked_encode_image(model.inner, images, 0.5, torch.Generator().manual_seed(3))
        b = masked_encode_image(model.inner.visual, images, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_keep_indices_are_distinct_per_sample():
    idx = keep_indices(4, 64, 0.75, torch.Generator().manual_seed(0))
    assert idx.shape == (4, 16)
    assert all(row.unique().numel() == 16 for row in idx)
    assert not torch.equal(idx[0].sort().values, idx[1].sort().values)


def test_bad_ratio_and_non_vit_refused():
    with pytest.raises(UserError, match="mask_ratio"):
        keep_indices(1, 4, 1.0)
    with pytest.raises(UserError, match="VisionTransformer"):
        masked_encode_image(torch.nn.Linear(2, 2), torch.randn(1, 3, 8, 8))
