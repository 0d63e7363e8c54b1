"""Export a trained student for other runtimes.

`open_clip`: a folder that open_clip 3.x loads as-is, three ways:
    open_clip.create_model_and_transforms("local-dir:OUT")               (open_clip_config.json + weights)
    open_clip.add_model_config("OUT/ARCH.json")
    open_clip.create_model_and_transforms("ARCH", pretrained="OUT/open_clip_model.safetensors")
`onnx`: `image_encoder.onnx` (images [B, 3, H, W] -> features [B, D]) and `text_encoder.onnx`
(token ids [B, L] int64 -> features [B, D]), unnormalised, batch dimension dynamic.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn

from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text
from clipdistill.zoo import OpenClipModel

Format = Literal["open_clip", "onnx"]
WEIGHTS = "open_clip_model.safetensors"


def export_open_clip(model: OpenClipModel, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.inner.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
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
        paths.append(path)
    return paths


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
