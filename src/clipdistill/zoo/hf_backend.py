"""Local Hugging Face `CLIPModel` folders (`hf:DIR`), with their own tokenizer and image processor."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms as T

from clipdistill.errors import UserError
from clipdistill.safeload import load_tensors
from clipdistill.zoo.base import ClipModel, cap_texts, eos_mask, load_exact_state


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
        from transformers import AutoTokenizer, CLIPImageProcessor

        inner = _build(folder, spec)
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
        out = self._tok(cap_texts(list(texts), self.context_length), padding="max_length", truncation=True,
                        max_length=self.context_length, return_tensors="pt")
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


def load_hf(target: str, spec: str, download: bool = True) -> HFClipModel:
    """`hf:DIR` (an existing folder wins) or `hf:ORG/NAME` (the Hugging Face cache)."""
    path = Path(target)
    if not path.is_dir():
        from clipdistill.zoo.hub import hf_snapshot

        if target.startswith((".", "/", "~")) or path.suffix or target.count("/") != 1:
            raise UserError(f"{spec}: folder not found: {target}")
        path = hf_snapshot(spec, target, download)
    if not (path / "config.json").is_file():
        raise UserError(f"{spec}: {target} is not a Hugging Face model folder (no config.json)")
    if _model_type(path) == "siglip":
        from clipdistill.zoo.hf_siglip import HFSiglipModel

        return HFSiglipModel(path, spec)
    return HFClipModel(path, spec)


def _model_type(folder: Path) -> str | None:
    """config.json's model_type, or None when unreadable (`_build` then names the problem)."""
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return raw.get("model_type") if isinstance(raw, dict) else None


# Buffers transformers recomputes at init and older versions saved; any other key must match exactly.


def _weight_files(folder: Path, spec: str) -> list[Path]:
    """The weight files of a transformers folder, safetensors first; an index's shards must all exist."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{spec}: {folder / index} is not a weight index ({type(e).__name__}: {e})") from None
            for shard in shards:
                p = (folder / str(shard)).resolve()
                if p.parent != folder.resolve() or not p.is_file():
                    raise UserError(f"{spec}: {index} names {shard!r}, which is not a file in {folder}")
            return [folder / str(x) for x in shards]
    raise UserError(f"{spec}: {folder} has no weights (model.safetensors, pytorch_model.bin or their .index.json)")


def _no_init_weights():
    """transformers' own context that builds a model without running its (slow, discarded) weight init; the
    buffers a model computes in `__init__` (position_ids) are still made."""
    try:
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:
        from transformers.modeling_utils import no_init_weights  # transformers 4
    return no_init_weights()


# model_type -> (name in messages, transformers config class, model class); SiglipModel: `hf_siglip`
_KINDS = {"clip": ("CLIP", "CLIPConfig", "CLIPModel"), "siglip": ("SigLIP", "SiglipConfig", "SiglipModel")}


def _build(folder: Path, spec: str, kind: str = "clip") -> nn.Module:
    """A transformers CLIPModel (SiglipModel) from config.json + weights read by `safeload` (safetensors, or `.bin` with
    weights_only=True: never a pickle's code), refusing missing or unexpected keys by name; transformers'
    own `from_pretrained` would random-init whatever is missing and return normally."""
    import transformers

    name, config_cls, model_cls = _KINDS[kind][0], *(getattr(transformers, c) for c in _KINDS[kind][1:])
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{spec}: {folder / 'config.json'} is not a {name} config (not valid JSON: {e})") from None
    if not isinstance(raw, dict) or raw.get("model_type") != kind:
        got = raw.get("model_type") if isinstance(raw, dict) else None
        raise UserError(f"{spec}: {folder / 'config.json'} is not a {name} config (model_type {got!r}, need "
                        f"{kind!r}; hf: loads transformers CLIPModel and SiglipModel folders)")
    try:
        config = config_cls.from_pretrained(str(folder))
    except Exception as e:  # JSON errors, wrong model_type, bad values: transformers raises many types
        raise UserError(f"{spec}: {folder / 'config.json'} is not a {name} config ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder, spec):
        state.update(load_tensors(f))
    try:
        with _no_init_weights():  # every tensor is overwritten below (missing ones refused): skip the random init
            model = model_cls(config)
    except Exception as e:
        raise UserError(f"{spec}: config.json does not describe a buildable {name} ({type(e).__name__}: {e})") from None
    load_exact_state(model, state, spec, "config.json")
    return model.eval()
