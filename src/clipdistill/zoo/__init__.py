"""The model zoo: one SPEC string loads a CLIP from every format users already have.

See `spec.py` for the grammar and `base.ClipModel` for the interface every command uses.
"""

from __future__ import annotations

from clipdistill.zoo.base import ClipModel, eos_mask
from clipdistill.zoo.openclip_backend import OpenClipModel, read_arch_config, shipped_archs
from clipdistill.zoo.run_folder import save_run_model
from clipdistill.zoo.spec import ModelSpec, parse_spec

__all__ = [
    "ClipModel", "ModelSpec", "OpenClipModel", "eos_mask", "load_model", "parse_spec", "read_arch_config",
    "save_run_model", "shipped_archs",
]


def load_model(spec: str, device: str = "cpu") -> ClipModel:
    """Load any SPEC (`open_clip:ARCH[@CKPT]`, `hf:DIR`, `run:DIR`) as a `ClipModel` in eval mode."""
    parsed = parse_spec(spec)
    if parsed.kind == "open_clip":
        from clipdistill.zoo.openclip_backend import load_open_clip

        model = load_open_clip(spec, parsed.target, parsed.checkpoint)
    elif parsed.kind == "hf":
        from clipdistill.zoo.hf_backend import load_hf

        model = load_hf(parsed.target, spec)
    else:
        from clipdistill.zoo.run_folder import load_run

        model = load_run(parsed.target, spec)
    return model.to(device).eval()
