"""Students trained by clipdistill: `run:DIR` holds `model.json` (open_clip config) + `model.safetensors`."""

from __future__ import annotations

import json
from pathlib import Path

from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text
from clipdistill.safeload import load_tensors, save_tensors
from clipdistill.zoo.openclip_backend import OpenClipModel, apply_state, build_open_clip, validate_config

MODEL_JSON, MODEL_WEIGHTS = "model.json", "model.safetensors"


def save_run_model(model: OpenClipModel, run_dir: str | Path) -> Path:
    """Write the student so `run:DIR` (and `export`) can load it; atomic, like every checkpoint file."""
    if not isinstance(model, OpenClipModel):
        raise UserError("only open_clip-architecture students can be saved as a run model")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(model.inner.state_dict(), run_dir / MODEL_WEIGHTS)
    meta = {"arch": model.arch, "arch_config": model.arch_config, "trained_from": model.spec}
    atomic_write_text(run_dir / MODEL_JSON, json.dumps(meta, indent=2))
    return run_dir


def load_run(folder: str, spec: str) -> OpenClipModel:
    path = Path(folder)
    meta_path, weights = path / MODEL_JSON, path / MODEL_WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise UserError(f"{spec}: {folder} holds no trained student ({MODEL_JSON} + {MODEL_WEIGHTS}); "
                        "is the run finished? A checkpoint loads as "
                        f"open_clip:ARCH@{folder}/checkpoints/step_N/model.safetensors")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{spec}: {meta_path} is not valid JSON ({e}); the run folder is damaged") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), str) or "arch_config" not in meta:
        raise UserError(f"{spec}: {meta_path} lacks arch / arch_config; the run folder is damaged")
    validate_config(meta["arch_config"], f"{spec} ({MODEL_JSON} arch_config)")
    inner = build_open_clip(meta["arch"], meta["arch_config"], init=False)
    apply_state(inner, load_tensors(weights), spec)
    return OpenClipModel(inner, spec, meta["arch"], meta["arch_config"])
