"""The model zoo: one SPEC string loads a CLIP from every format users already have.

See `spec.py` for the grammar and `base.ClipModel` for the interface every command uses.
"""

from __future__ import annotations

from pathlib import Path

from clipdistill.errors import UserError
from clipdistill.zoo.base import ClipModel, eos_mask
from clipdistill.zoo.openclip_backend import OpenClipModel, read_arch_config, shipped_archs
from clipdistill.zoo.run_folder import save_run_model
from clipdistill.zoo.spec import ModelSpec, parse_spec

__all__ = [
    "ClipModel", "ModelSpec", "OpenClipModel", "download_model", "eos_mask", "load_model", "parse_spec",
    "read_arch_config", "save_run_model", "shipped_archs",
]


def load_model(spec: str, device: str = "cpu", download: bool = True) -> ClipModel:
    """Load any SPEC (see `spec.py`) as a `ClipModel` in eval mode. Named weights not yet in the Hugging Face
    cache are downloaded when `download` and not HF_HUB_OFFLINE; otherwise one error says how to fill it."""
    parsed = parse_spec(spec)
    if parsed.kind == "open_clip":
        from clipdistill.zoo.openclip_backend import load_open_clip

        model = load_open_clip(spec, parsed.target, parsed.checkpoint, download)
    elif parsed.kind == "hf":
        from clipdistill.zoo.hf_backend import load_hf

        model = load_hf(parsed.target, spec, download)
    else:
        from clipdistill.zoo.run_folder import load_run

        model = load_run(parsed.target, spec)
    return model.to(device).eval()


def download_model(spec: str) -> list[Path]:
    """Fill the Hugging Face cache with what `spec` names (`models download`); returns the cached files."""
    from clipdistill.zoo import hub

    parsed = parse_spec(spec)
    if parsed.kind == "hf" and not Path(parsed.target).is_dir():
        folder = hub.hf_snapshot(spec, parsed.target)
        return sorted(p for p in folder.iterdir() if p.is_file())
    if parsed.kind == "open_clip" and parsed.target.startswith("hf-hub:"):
        weights, extra = hub.resolve(hub.open_clip_hub_source(spec, parsed.target[len("hf-hub:"):]))
        return [*extra.values(), weights]
    if parsed.kind == "open_clip" and parsed.checkpoint and not Path(parsed.checkpoint).exists():
        from clipdistill.zoo.openclip_backend import read_arch_config

        source, _ = hub.open_clip_tag_source(spec, read_arch_config(parsed.target)[0], parsed.checkpoint)
        return [hub.resolve(source)[0]]
    raise UserError(f"{spec}: nothing to download; only open_clip:ARCH@TAG, open_clip:hf-hub:ORG/NAME and "
                    "hf:ORG/NAME name published weights")
