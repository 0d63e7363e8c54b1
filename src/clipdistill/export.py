"""Export a trained student for other runtimes.

`open_clip`: a folder open_clip 3.x loads as-is (`import clipdistill` first in a venv without the startup hook):
    open_clip.create_model_and_transforms("local-dir:OUT")          (open_clip_config.json + weights)
    open_clip.get_tokenizer("local-dir:OUT")
`OUT/ARCH.json` is the bare architecture config, for `open_clip.add_model_config` + `pretrained=FILE`.
`onnx`: `image_encoder.onnx` (images [B, 3, H, W] -> features [B, D]) and `text_encoder.onnx`
(token ids [B, L] int64 -> features [B, D]), unnormalised, batch dimension dynamic; each carries what a
runtime needs to feed it (`metadata_props`: preprocessing, tokenizer, logit scale, embed dim, source SPEC).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text
from clipdistill.safeload import save_tensors
from clipdistill.zoo import OpenClipModel

Format = Literal["open_clip", "onnx"]
WEIGHTS = "open_clip_model.safetensors"


def export_open_clip(model: OpenClipModel, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(model.inner.state_dict(), out / WEIGHTS)
    preprocess = dict(model.inner.visual.preprocess_cfg)
    atomic_write_text(out / "open_clip_config.json",
                      json.dumps({"model_cfg": model.arch_config, "preprocess_cfg": preprocess}, indent=2))
    arch_json = out / f"{Path(model.arch).stem}.json"
    atomic_write_text(arch_json, json.dumps(model.arch_config, indent=2))
    return [out / WEIGHTS, out / "open_clip_config.json", arch_json]


class _Tower(nn.Module):
    def __init__(self, model: OpenClipModel, which: str):
        super().__init__()
        self.model, self.which = model, which

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x) if self.which == "image" else self.model.encode_text(x)


def export_onnx(model: OpenClipModel, out: Path, opset: int = 18) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    images = torch.zeros(2, 3, model.image_size, model.image_size)
    ids = model.tokenizer(["a photo", "two red squares"])
    paths = []
    for which, example, name in (("image", images, "images"), ("text", ids, "token_ids")):
        path = out / f"{which}_encoder.onnx"
        with warnings.catch_warnings():  # tracer notes on shape checks that are constant for this model
            warnings.simplefilter("ignore")
            torch.onnx.export(_Tower(model, which), (example,), str(path), input_names=[name],
                              output_names=["features"],
                              dynamic_axes={name: {0: "batch"}, "features": {0: "batch"}},
                              opset_version=opset, dynamo=False)
        _add_metadata(path, onnx_metadata(model, which))
        paths.append(path)
    return paths


def onnx_metadata(model: OpenClipModel, which: str) -> dict[str, str]:
    """String key/values for an encoder's `metadata_props` (ONNX allows strings only; lists are JSON)."""
    pp = dict(model.inner.visual.preprocess_cfg)
    tok = getattr(model.tokenizer, "wrapped", model.tokenizer)  # past the character cap `zoo.base` adds
    meta = {
        "clipdistill.tower": which,
        "clipdistill.source_spec": model.spec,
        "clipdistill.arch": model.arch,
        "embed_dim": str(model.embed_dim),
        "logit_scale": repr(float(model.logit_scale.detach())),  # exp'd, as multiplied into cosine similarity
        "normalized_output": "false",
    }
    bias = getattr(model, "logit_bias", None)
    if bias is not None:  # a sigmoid-loss (SigLIP) model: probability = sigmoid(scale * cosine + bias)
        meta["logit_bias"] = repr(float(bias.detach().reshape(-1)[0]))
    if which == "image":
        meta.update({"image_size": str(model.image_size), "image_mean": json.dumps(list(model.image_mean)),
                     "image_std": json.dumps(list(model.image_std)),
                     "interpolation": str(pp.get("interpolation", "bicubic")),
                     "resize_mode": str(pp.get("resize_mode", "shortest"))})
    else:
        text_cfg = model.arch_config.get("text_cfg", {})
        # open_clip's SimpleTokenizer is CLIP's BPE; an HF tokenizer is named by its hub id
        name = text_cfg.get("hf_tokenizer_name") or f"open_clip.{type(tok).__name__}"
        pool = getattr(model._text, "text_pool_type", getattr(model._text, "pool_type", "argmax"))
        meta.update({"tokenizer": name, "context_length": str(model.context_length),
                     "eos_token_id": str(model.eos_id), "text_pool_type": str(pool)})
    return meta


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)


def export_model(model, fmt: Format, out: str | Path) -> list[Path]:
    if not isinstance(model, OpenClipModel):
        raise UserError("export supports open_clip-architecture models (run:DIR, open_clip:...), "
                        f"got {getattr(model, 'spec', type(model).__name__)}")
    out = Path(out)
    if fmt == "open_clip":
        return export_open_clip(model, out)
    if fmt == "onnx":
        return export_onnx(model, out)
    raise UserError(f"unknown export format {fmt!r}: use open_clip or onnx")
