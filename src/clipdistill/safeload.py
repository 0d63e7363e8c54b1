"""The one place checkpoints are read. Never unpickles code.

safetensors files are read with safetensors; anything else with `torch.load(weights_only=True)`,
whose restricted unpickler refuses any global that is not a tensor/container type. A refusal becomes an
`UnsafeCheckpointError` saying so (the object was never constructed, so no code ran).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from clipdistill.errors import UnsafeCheckpointError, UserError


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from a .safetensors file, an open_clip checkpoint or a bare state dict.

    Unwraps `{"state_dict": ...}` and strips the `module.` prefix DDP adds.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    obj = load_object(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def save_tensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (temp name + rename) with the permissions any other file of the
    user gets (0o666 & ~umask): safetensors itself creates files 0600, which other users and tools sharing a
    results folder cannot read."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
    return path


def honour_umask(folder: str | Path) -> None:
    """Give the `.safetensors` files a library wrote into `folder` (transformers' `save_pretrained` writes them
    through safetensors, 0600) the mode any other file of the user gets, as `save_tensors` does."""
    mode = 0o666 & ~current_umask()
    for path in Path(folder).glob("*.safetensors"):
        os.chmod(path, mode)


def load_object(path: str | Path) -> Any:
    """`torch.load` restricted to tensors and plain containers (training state, optimizer state)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).splitlines()[0] if str(e) else "unsupported global"
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file carries pickled Python objects/code that weights-only "
            f"loading does not allow ({first}). Nothing from it was executed. Convert it to a plain "
            "state dict or safetensors in a trusted environment."
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UserError(f"{path}: not a readable checkpoint ({e})") from None
