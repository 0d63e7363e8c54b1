"""Local Hugging Face `SiglipModel` folders (`hf:DIR` whose config.json says model_type "siglip"; SigLIP and
the fixed-resolution SigLIP 2 releases), with their own tokenizer, image processor, logit scale and bias.

Embeddings are what transformers 5's `SiglipModel.get_image_features` / `get_text_features` return: the vision
tower's attention-pool head output, and the text head applied to the last position (SigLIP pools position L-1,
which is padding for short captions: captions are padded to max_length, as the models were trained). Text goes
in without an attention mask, as `SiglipTokenizer` returns none and big_vision trains without one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from clipdistill.errors import UserError
from clipdistill.zoo.base import ClipModel, cap_texts, eos_mask
from clipdistill.zoo.hf_backend import _build, _size

# PIL resample codes the image processor stores -> torchvision's
_RESAMPLE = {Image.NEAREST: T.InterpolationMode.NEAREST, Image.BILINEAR: T.InterpolationMode.BILINEAR,
             Image.BICUBIC: T.InterpolationMode.BICUBIC}


class HFSiglipModel(ClipModel):
    def __init__(self, folder: Path, spec: str):
        from transformers import AutoTokenizer, SiglipImageProcessor

        inner = _build(folder, spec, "siglip")
        super().__init__(inner)
        self.spec, self.arch = spec, f"hf:{folder.name}"
        self.embed_dim = int(inner.config.text_config.projection_size)
        self.context_length = int(inner.config.text_config.max_position_embeddings)
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except ImportError as e:  # SigLIP's own tokenizer is a sentencepiece model
            raise UserError(f"{spec}: its tokenizer needs a package this installation lacks ({e})") from None
        except Exception as e:  # a broken tokenizer file: transformers / tokenizers raise many types
            first = str(e).splitlines()[0] if str(e) else ""
            raise UserError(f"{spec}: cannot build its tokenizer from {folder} ({type(e).__name__}: {first})") from None
        self.eos_id = int(tok.eos_token_id)
        self._tok = tok
        proc = SiglipImageProcessor.from_pretrained(str(folder))
        h, w = _size(proc.size)
        self.image_size = int(h)
        self.image_mean, self.image_std = tuple(proc.image_mean), tuple(proc.image_std)
        if proc.resample not in _RESAMPLE:
            raise UserError(f"{spec}: image processor resample {proc.resample!r} is not one clipdistill mirrors")
        mode = _RESAMPLE[proc.resample]
        norm = [T.ToTensor(), T.Normalize(self.image_mean, self.image_std)]
        rgb = T.Lambda(lambda im: im.convert("RGB"))
        # SiglipImageProcessor resizes straight to (h, w), no aspect-keeping resize and no centre crop
        self.eval_transform = T.Compose([rgb, T.Resize((h, w), mode), *norm])
        self.train_transform = T.Compose([rgb, T.RandomResizedCrop((h, w), scale=(0.9, 1.0), interpolation=mode),
                                          *norm])

    def tokenizer(self, texts: list[str]) -> torch.Tensor:  # type: ignore[override]
        out = self._tok(cap_texts(list(texts), self.context_length), padding="max_length", truncation=True,
                        max_length=self.context_length, return_tensors="pt")
        return out["input_ids"]

    def encode_image(self, images, normalize=False):
        x = self.inner.vision_model(pixel_values=images).pooler_output
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def encode_text(self, ids, normalize=False):
        x = self.inner.text_model(input_ids=ids).pooler_output
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def encode_image_tokens(self, images):
        # the pooled embedding is an attention-pool head over the patches, with no per-patch projection
        raise UserError(f"{self.spec}: per-patch features need a CLIP-style image projection; SigLIP pools its "
                        "patches with an attention head")

    def encode_text_tokens(self, ids):
        tm = self.inner.text_model
        tokens = tm.head(tm(input_ids=ids).last_hidden_state)  # pooled = head(last position), as in the model
        return tokens[:, -1], tokens, eos_mask(ids, self.eos_id)

    @property
    def raw_logit_scale(self):
        return self.inner.logit_scale.reshape(())

    @property
    def logit_bias(self):
        return self.inner.logit_bias.reshape(())

    def visual_parameters(self):
        return list(self.inner.vision_model.parameters())
