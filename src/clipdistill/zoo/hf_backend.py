"""Local Hugging Face `CLIPModel` folders (`hf:DIR`), with their own tokenizer and image processor."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import transforms as T

from clipdistill.errors import UserError
from clipdistill.zoo.base import ClipModel, eos_mask


def _size(size) -> tuple[int, int]:
    """(h, w) from an image-processor size: a dict, a SizeDict (transformers 5), or an int."""
    if isinstance(size, int):
        return size, size
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    if get("shortest_edge"):
        return get("shortest_edge"), get("shortest_edge")
    return get("height"), get("width")


class HFClipModel(ClipModel):
    def __init__(self, folder: Path, spec: str):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        inner = CLIPModel.from_pretrained(str(folder))
        super().__init__(inner)
        self.spec, self.arch = spec, f"hf:{folder.name}"
        self.embed_dim = int(inner.config.projection_dim)
        self.context_length = int(inner.config.text_config.max_position_embeddings)
        tok = AutoTokenizer.from_pretrained(str(folder))
        self.eos_id = int(tok.eos_token_id)
        self._tok = tok
        proc = CLIPImageProcessor.from_pretrained(str(folder))
        resize = _size(proc.size)[0]
        crop = _size(proc.crop_size)
        self.image_size = int(crop[0])
        self.image_mean, self.image_std = tuple(proc.image_mean), tuple(proc.image_std)
        norm = [T.ToTensor(), T.Normalize(self.image_mean, self.image_std)]
        rgb = T.Lambda(lambda im: im.convert("RGB"))
        # Mirrors CLIPImageProcessor (shortest-edge bicubic resize, centre crop); PIL resampling can differ
        # from the processor's numpy resize by a few grey levels, which is why tests compare on tensors.
        self.eval_transform = T.Compose([rgb, T.Resize(resize, T.InterpolationMode.BICUBIC), T.CenterCrop(crop), *norm])
        self.train_transform = T.Compose(
            [rgb, T.RandomResizedCrop(crop, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC), *norm]
        )

    def tokenizer(self, texts: list[str]) -> torch.Tensor:  # type: ignore[override]
        out = self._tok(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                        return_tensors="pt")
        return out["input_ids"]

    def _mask(self, ids):
        return eos_mask(ids, self.eos_id).long()

    def encode_image(self, images, normalize=False):
        out = self.inner.vision_model(pixel_values=images, return_dict=True)
        x = self.inner.visual_projection(out.pooler_output)
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def encode_text(self, ids, normalize=False):
        out = self.inner.text_model(input_ids=ids, attention_mask=self._mask(ids), return_dict=True)
        x = self.inner.text_projection(out.pooler_output)
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def encode_image_tokens(self, images):
        vm = self.inner.vision_model
        out = vm(pixel_values=images, return_dict=True)
        pooled = self.inner.visual_projection(out.pooler_output)
        tokens = self.inner.visual_projection(vm.post_layernorm(out.last_hidden_state[:, 1:]))
        return pooled, tokens

    def encode_text_tokens(self, ids):
        mask = self._mask(ids)
        out = self.inner.text_model(input_ids=ids, attention_mask=mask, return_dict=True)
        proj = self.inner.text_projection
        return proj(out.pooler_output), proj(out.last_hidden_state), mask.bool()

    @property
    def raw_logit_scale(self):
        return self.inner.logit_scale

    def visual_parameters(self):
        return list(self.inner.vision_model.parameters()) + list(self.inner.visual_projection.parameters())


def load_hf(folder: str, spec: str) -> HFClipModel:
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise UserError(f"{spec}: {folder} is not a Hugging Face model folder (no config.json)")
    if not any((path / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
        # .bin weights would go through pickle; refuse rather than unpickle
        raise UserError(f"{spec}: {folder} has no model.safetensors; convert .bin weights to safetensors first")
    return HFClipModel(path, spec)
