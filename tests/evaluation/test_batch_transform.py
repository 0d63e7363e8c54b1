"""Evaluation batches finish ToTensor + Normalize on the stacked uint8 batch: the floats must be exactly what the
model's eval transform gives image by image, for every image mode, size and loader setting."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from clipdistill.data.pixels import split_transform
from clipdistill.evaluation.features import image_batches
from clipdistill.zoo import load_model
from siglip_models import write_hf_siglip_folder


class Images:
    def __init__(self, images: list[Image.Image | None]):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int):
        return self.images[i]


def _mixed_images() -> list[Image.Image | None]:
    g = torch.Generator().manual_seed(0)
    out: list[Image.Image | None] = []
    for k, (w, h) in enumerate([(40, 36), (17, 50), (64, 64), (90, 33), (31, 31), (50, 70), (12, 12)]):
        arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
        im = Image.fromarray(arr, "RGB")
        out.append([im, im.convert("L"), im.convert("RGBA"), im.convert("P"), im, im.convert("CMYK"), im][k])
    out.insert(3, None)  # undecodable: a counted skip
    return out


def _per_image(transform, images):
    kept = [i for i, im in enumerate(images) if im is not None]
    return torch.stack([transform(images[i]) for i in kept]), kept


def _transforms(tmp_path_factory):
    torch.manual_seed(0)
    siglip = load_model(f"hf:{write_hf_siglip_folder(tmp_path_factory.mktemp('sig') / 'hf')}")
    return {
        "open_clip": load_model("open_clip:cd-student-xs-32").eval_transform,
        "hf_siglip": siglip.eval_transform,
        "hf_clip_like": T.Compose([T.Lambda(lambda im: im.convert("RGB")), T.Resize(24, T.InterpolationMode.BICUBIC),
                                   T.CenterCrop(24), T.ToTensor(), T.Normalize((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))]),
    }


@pytest.fixture(scope="module")
def transforms(tmp_path_factory):
    return _transforms(tmp_path_factory)


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("name", ["open_clip", "hf_siglip", "hf_clip_like"])
def test_batches_equal_the_per_image_transform_bit_for_bit(transforms, name, workers):
    tf = transforms[name]
    assert split_transform(tf) is not None
    images = _mixed_images()
    want, kept = _per_image(tf, images)
    xs, idx, skipped = [], [], 0
    for x, i, s in image_batches(Images(images), tf, len(images), batch_size=3, num_workers=workers):
        skipped += s
        if x is not None:
            xs.append(x)
            idx.append(i)
    got = torch.cat(xs)
    assert skipped == 1 and torch.cat(idx).tolist() == kept
    assert got.dtype == want.dtype and got.is_contiguous() and torch.equal(got, want)


def test_a_head_that_keeps_another_mode_is_transformed_in_full_within_the_batch():
    # no RGB conversion: the HSV image (3 bytes per pixel, not RGB) takes the per-image path, the RGB ones the
    # batch path, all in one batch
    tf = T.Compose([T.Resize(16), T.CenterCrop(16), T.ToTensor(), T.Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.3))])
    base = Image.fromarray(torch.randint(0, 256, (20, 30, 3), generator=torch.Generator().manual_seed(1),
                                         dtype=torch.uint8).numpy(), "RGB")
    images = [base, base.convert("HSV"), base.rotate(90, expand=True)]
    (x, idx, skipped), = list(image_batches(Images(images), tf, 3, batch_size=3, num_workers=0))
    assert skipped == 0 and idx.tolist() == [0, 1, 2]
    assert torch.equal(x, torch.stack([tf(im) for im in images]))


def test_other_transforms_run_whole_per_image():
    tf = T.Compose([T.Resize(8), T.CenterCrop(8), T.PILToTensor()])  # no Normalize: not split
    assert split_transform(tf) is None and split_transform(lambda im: im) is None

    class HalfTensor(T.ToTensor):  # a ToTensor subclass may convert otherwise: not split
        def __call__(self, pic):
            return super().__call__(pic) / 2

    norm = T.Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert split_transform(T.Compose([T.Resize(8), HalfTensor(), norm])) is None
    assert split_transform(T.Compose([T.Resize(8), T.ToTensor(), norm])) is not None
    images = [Image.new("RGB", (10, 12), (1, 2, 3)), Image.new("RGB", (9, 9), (200, 100, 50))]
    (x, _, _), = list(image_batches(Images(images), tf, 2, batch_size=2, num_workers=0))
    assert x.dtype == torch.uint8 and torch.equal(x, torch.stack([tf(im) for im in images]))
