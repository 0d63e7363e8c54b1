"""A local transformers ViLT folder as the CLIP-TD student (`student.model: hf:DIR`), behind the interface of our own
`VLStudent`: `forward(images, ids) -> StudentOutput` (td/contracts.py),
`tokenize(texts)`, `image_transform()`, `grid`, `width`.

- Weights: `ViltModel.from_pretrained(DIR, use_safetensors=True)` (pickled `.bin` weights are refused); a
  ViltForMaskedLM / ViltForQuestionAnswering folder works too (transformers strips the `vilt.` prefix; the task head
  is new).
- Text: the folder's own tokenizer (BERT WordPiece for the released ViLTs), `max_length` = min(student
  context_length, the config's max_position_embeddings); a fast tokenizer is required (its character offsets align
  the student's tokens with the CLIP teacher's, td/align.py).
- Images: square centre crops at the config's `image_size`, normalised with the folder's image processor mean / std
  (0.5 / 0.5 without one). ViLT's own processor resizes the shorter edge and pads; a square input with a full pixel
  mask is the same model on a fixed patch grid, which the teacher's patch tokens are pooled onto.
- `cls` is ViLT's pooler output (tanh(dense([CLS]))), the input of ViltForQuestionAnswering's classifier, so the
  exported task model is a ViltForQuestionAnswering (td/export_hf.py).
- Patch tokens come out in grid order. ViltModel's `visual_embed` returns the patches in a random permutation
  (`torch.multinomial`, its patch sampling for pretraining); the embedding is computed here exactly as there,
  without the permutation (attention does not depend on the order: the outputs agree up to float summation order),
  so the same positions can be distilled and the global RNG is not consumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from clipdistill.errors import UserError
from clipdistill.manifest import sha256_file
from clipdistill.td.contracts import StudentOutput
from clipdistill.zoo.base import cap_texts

VILT_MEAN = VILT_STD = (0.5, 0.5, 0.5)  # ViltImageProcessor's defaults (IMAGENET_STANDARD)


def check_folder(spec: str) -> Path:
    """The folder of an hf: student SPEC, refused (UserError) unless it holds a ViLT config and safetensors weights."""
    folder = Path(spec[len("hf:"):])
    if not folder.is_dir():
        raise UserError(f"student {spec}: no such folder (hf:DIR names a local transformers ViLT folder)")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise UserError(f"student {spec}: {cfg} is missing (save the model with save_pretrained)")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise UserError(f"student {spec}: {cfg} is not a transformers config ({e})") from None
    if model_type != "vilt":
        raise UserError(f"student {spec}: model_type {model_type!r}, expected 'vilt' (a ViLT folder)")
    if not any(folder.glob("*.safetensors")):
        raise UserError(f"student {spec}: no .safetensors weights in {folder} (pickled .bin weights are refused; "
                        "re-save with save_pretrained(safe_serialization=True))")
    return folder


class HFViltStudent(nn.Module):
    family = "hf_vilt"

    def __init__(self, spec: str, context_length: int):
        super().__init__()
        from transformers import AutoTokenizer, ViltModel
        from transformers.utils import logging as hf_logging

        folder = check_folder(spec)
        hf_logging.disable_progress_bar()  # transformers' per-load bar: noise in every protocol cell's output
        try:
            self.vilt, info = ViltModel.from_pretrained(str(folder), use_safetensors=True, output_loading_info=True,
                                                        attn_implementation="eager")
        except (OSError, ValueError) as e:
            raise UserError(f"student {spec}: cannot load the ViLT weights ({e})") from None
        self.loading_info = {k: sorted(v) for k, v in info.items() if v and k != "error_msgs"}
        try:
            self.hf_tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"student {spec}: cannot load its tokenizer ({e})") from None
        if not getattr(self.hf_tokenizer, "is_fast", False):
            raise UserError(f"student {spec}: its tokenizer is not a fast tokenizer (tokenizer.json); the teacher "
                            "alignment needs character offsets")
        c = self.vilt.config
        image_size, patch_size = c.image_size, c.patch_size
        if not isinstance(image_size, int) or not isinstance(patch_size, int):
            raise UserError(f"student {spec}: image_size / patch_size must be single ints (square patches), "
                            f"got {image_size!r} / {patch_size!r}")
        if image_size % patch_size:
            raise UserError(f"student {spec}: image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.spec, self.folder = spec, folder
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.context_length = min(context_length, int(c.max_position_embeddings))
        self.image_mean, self.image_std = self._normalisation(folder)
        self.pad_id = int(self.hf_tokenizer.pad_token_id or 0)

    @staticmethod
    def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return VILT_MEAN, VILT_STD
        doc = json.loads(path.read_text())
        return tuple(doc.get("image_mean", VILT_MEAN)), tuple(doc.get("image_std", VILT_STD))

    @property
    def width(self) -> int:
        return int(self.vilt.config.hidden_size)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def describe(self) -> dict:
        """What the student is, for task_model.json / the manifest."""
        c = self.vilt.config
        weights = sorted(self.folder.glob("*.safetensors"))
        return {"model": self.spec, "family": self.family, "image_size": self.image_size,
                "patch_size": self.patch_size, "width": self.width, "layers": c.num_hidden_layers,
                "heads": c.num_attention_heads, "context_length": self.context_length,
                "vocab_size": c.vocab_size, "image_mean": list(self.image_mean), "image_std": list(self.image_std),
                "weights_sha256": {p.name: sha256_file(p) for p in weights}, **self.loading_info}

    def image_transform(self) -> T.Compose:
        return T.Compose([T.Resize(self.image_size, interpolation=T.InterpolationMode.BICUBIC),
                          T.CenterCrop(self.image_size), T.ToTensor(), T.Normalize(self.image_mean, self.image_std)])

    def _encode(self, texts: list[str], offsets: bool = False):
        texts = cap_texts(list(texts), self.context_length)  # a prefix: offsets stay those of the full text
        return self.hf_tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                                 return_tensors="pt", return_offsets_mapping=offsets)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self._encode(texts)["input_ids"]

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int] | None]]:
        """Per text, per student token position: its character span in the text (None: special token / padding)."""
        enc = self._encode(texts, offsets=True)
        special = [self.hf_tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                   for ids in enc["input_ids"].tolist()]
        return [[None if sp or s == e else (s, e) for (s, e), sp in zip(row.tolist(), sp_row, strict=True)]
                for row, sp_row in zip(enc["offset_mapping"], special, strict=True)]

    def _image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ViltEmbeddings.visual_embed for a full pixel mask, patches kept in grid order: [B, 1 + N, d]."""
        emb = self.vilt.embeddings
        x = emb.patch_embeddings(pixel_values)
        b, d, h, w = x.shape
        side = self.vilt.config.image_size // self.vilt.config.patch_size
        spatial = emb.position_embeddings[:, 1:, :].transpose(1, 2).view(1, d, side, side)
        pos = F.interpolate(spatial, size=(h, w), mode="bilinear", align_corners=True)
        pos = pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([emb.cls_token.expand(b, -1, -1), x], dim=1)
        pos = torch.cat([emb.position_embeddings[:, :1, :].expand(b, -1, -1), pos], dim=1)
        return emb.dropout(x + pos)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, need_attention: bool = False) -> StudentOutput:
        ids = ids[:, : self.context_length]
        text_mask = ids != self.pad_id
        image_embeds = self._image_embeds(images)
        out = self.vilt(input_ids=ids, attention_mask=text_mask.long(), image_embeds=image_embeds,
                        pixel_mask=torch.ones(image_embeds.shape[:2], dtype=torch.long, device=ids.device),
                        output_attentions=need_attention, return_dict=True)
        seq, length = out.last_hidden_state, ids.shape[1]
        attention = None
        if need_attention:  # last layer, heads averaged, the pooled [CLS] (position 0) row: image then text
            row = out.attentions[-1].mean(1)[:, 0]
            attention = torch.cat([row[:, length + 1:], row[:, :length]], dim=1).detach()
        return StudentOutput(cls=out.pooler_output, image_tokens=seq[:, length + 1:], text_tokens=seq[:, :length],
                             text_mask=text_mask, cls_attention=attention)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
