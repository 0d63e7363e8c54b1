"""The pretrained student: a `transformers.ViltModel` plus ViLT's pretraining heads (MLM, ITM, optional ITC
projections), its image transform, and the Hugging Face folder it is written to."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clipdistill.manifest import atomic_write_text
from clipdistill.safeload import honour_umask, load_tensors, save_tensors
from clipdistill.vlpretrain.config import StudentArch

HEADS = "pretrain_heads.safetensors"  # the heads beside the HF folder's ViltModel weights (not a ViltModel's)
INIT_FROM = "init_from.json"  # what `student.init` started the transformer from


def vilt_config(arch: StudentArch, tokenizer):
    from transformers import ViltConfig

    return ViltConfig(
        vocab_size=len(tokenizer), hidden_size=arch.hidden_size, num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads, intermediate_size=arch.intermediate_size or 4 * arch.hidden_size,
        image_size=arch.image_size, patch_size=arch.patch_size, max_position_embeddings=arch.max_text_len,
        hidden_dropout_prob=arch.dropout, attention_probs_dropout_prob=arch.dropout,
        hidden_act=arch.activation, layer_norm_eps=arch.layer_norm_eps, pad_token_id=tokenizer.pad_token_id,
        # every patch of the (unpadded, square) image: no sampling of max_image_length patches
        max_image_length=-1)


def _init(module: nn.Module, std: float) -> None:
    """As ViLT's `init_weights` (dandelin/ViLT, vilt/modules/objectives.py): normal(0, std) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ViltPretrainer(nn.Module):
    """`vilt` (a transformers ViltModel, what the HF folder holds) + `mlm` (transformers' ViltMLMHead, decoder
    untied from the word embeddings as in ViLT's MLMHead) + `itm` (Linear(hidden, 2) on the pooled [CLS], ViLT's
    ITMHead) + `itc_text` / `itc_image` projections when image-text contrastive is on."""

    def __init__(self, config, itc: bool = False):
        from transformers import ViltModel
        from transformers.models.vilt.modeling_vilt import ViltMLMHead

        super().__init__()
        self.config = config
        self.vilt = ViltModel(config)
        self.mlm = ViltMLMHead(config)
        self.itm = nn.Linear(config.hidden_size, 2)
        heads = [self.mlm, self.itm]
        if itc:
            self.itc_text = nn.Linear(config.hidden_size, config.hidden_size)
            self.itc_image = nn.Linear(config.hidden_size, config.hidden_size)
            heads += [self.itc_text, self.itc_image]
        for h in heads:
            _init(h, config.initializer_range)

    @property
    def has_itc(self) -> bool:
        return hasattr(self, "itc_text")

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, pixels: torch.Tensor):
        """(last hidden state [B, L_text + 1 + patches, H], pooled [B, H]); text tokens first."""
        pixel_mask = torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long, device=pixels.device)
        out = self.vilt(input_ids=ids, attention_mask=attention, pixel_values=pixels, pixel_mask=pixel_mask)
        return out.last_hidden_state, out.pooler_output

    def unimodal(self, ids: torch.Tensor, attention: torch.Tensor, pixels: torch.Tensor):
        """Normalised ITC features from two single-modality passes through the shared encoder: the text tokens
        alone and the image tokens alone (each modality's [CLS], projected)."""
        from transformers.masking_utils import create_bidirectional_mask

        v = self.vilt
        pixel_mask = torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long, device=pixels.device)
        emb, _ = v.embeddings(ids, attention, None, pixels, pixel_mask, None, None)
        n = ids.shape[1]
        text_mask = create_bidirectional_mask(config=v.config, inputs_embeds=emb[:, :n], attention_mask=attention)
        text = v.layernorm(v.encoder(emb[:, :n], attention_mask=text_mask).last_hidden_state)[:, 0]
        image = v.layernorm(v.encoder(emb[:, n:]).last_hidden_state)[:, 0]
        return F.normalize(self.itc_text(text), dim=-1), F.normalize(self.itc_image(image), dim=-1)


class ImageTransform:
    """PIL -> [3, S, S]: the shorter edge resized to S (bicubic), a centre S x S crop (torchvision's Resize +
    CenterCrop arithmetic, as the `hf:DIR` student of td/hf_student.py reads images), then `ViltImageProcessor`
    (rescale, mean/std 0.5, or the CLIP's of `student.init`): the processor saved with the model, which leaves an
    S x S image's size as is."""

    def __init__(self, size: int, patch_size: int, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        self.processor = image_processor(size, patch_size, mean, std)
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        s, (w, h) = self.size, image.size
        if (w, h) != (s, s):
            new = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            image = image.resize(new, Image.Resampling.BICUBIC)
            left, top = int(round((new[0] - s) / 2.0)), int(round((new[1] - s) / 2.0))
            image = image.crop((left, top, left + s, top + s))
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def image_processor(size: int, patch_size: int, mean: tuple[float, ...] | None = None,
                    std: tuple[float, ...] | None = None):
    """ViLT's processor; `mean` / `std` replace its 0.5 (a ViLT started from a CLIP tower keeps the CLIP's, so
    its patch embedding sees the pixels it was trained on; td's hf: student reads them from the folder)."""
    from transformers import ViltImageProcessor

    norm = {"image_mean": list(mean), "image_std": list(std)} if mean is not None and std is not None else {}
    return ViltImageProcessor(size={"shortest_edge": size}, size_divisor=patch_size, **norm)


def save_folder(model: ViltPretrainer, tokenizer, out: Path, image_size: int, patch_size: int,
                init: dict | None = None) -> Path:
    """The HF folder: `ViltModel.save_pretrained` (config.json + model.safetensors), the tokenizer, the image
    processor, the pretraining heads in `pretrain_heads.safetensors`, and with `init` (`TowerInit.record()`)
    `init_from.json`: the SPEC and weights hash of the CLIP whose tower the transformer started from."""
    from transformers.utils import logging as hf_logging

    out.mkdir(parents=True, exist_ok=True)
    hf_logging.disable_progress_bar()  # transformers' per-shard bar: noise in the command's output
    model.vilt.save_pretrained(str(out), safe_serialization=True)
    honour_umask(out)  # save_pretrained's safetensors files are 0600 whatever the umask
    # the folder's tokenizer cuts at the model's text positions by default, as ViLT's does (max 40)
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.save_pretrained(str(out))
    mean, std = (init["image_mean"], init["image_std"]) if init else (None, None)
    image_processor(image_size, patch_size, mean, std).save_pretrained(str(out))
    if init:
        atomic_write_text(out / INIT_FROM, json.dumps(init, indent=2))
    heads = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("vilt.")}
    save_tensors(heads, out / HEADS, metadata={"format": "pt", "itc": json.dumps(model.has_itc)})
    return out


def load_folder(path: Path) -> tuple[ViltPretrainer, object]:
    """A folder `save_folder` wrote, back as (ViltPretrainer, tokenizer)."""
    from safetensors import safe_open
    from transformers import ViltModel

    from clipdistill.vlpretrain.text import load_tokenizer

    path = Path(path)
    vilt = ViltModel.from_pretrained(str(path), local_files_only=True)
    with safe_open(str(path / HEADS), framework="pt") as f:
        itc = json.loads((f.metadata() or {}).get("itc", "false"))
    model = ViltPretrainer(vilt.config, itc=itc)
    model.vilt = vilt
    heads = load_tensors(path / HEADS)
    missing, unexpected = model.load_state_dict(heads, strict=False)
    missing = [k for k in missing if not k.startswith("vilt.")]
    if missing or unexpected:
        from clipdistill.errors import UserError

        raise UserError(f"{path / HEADS}: heads do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model, load_tokenizer(path)
