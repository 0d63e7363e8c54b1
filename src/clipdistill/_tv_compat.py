"""Make torchvision importable on a CPU-only torch build.

The only torchvision that pins torch==2.13.0 is a CUDA build; its compiled ops need libtorch_cuda and
fail to load, and `import torchvision` then dies registering fake kernels for `torchvision::nms`.
Defining the two op schemas first lets the pure-Python parts (transforms, models) import. The compiled
ops themselves (nms, roi_align, torchvision.io decoders) still raise; we use PIL for image I/O.

Applied only when torch is a CPU build *and* torchvision's ops are missing, so it never shadows a
working CUDA install. Imported by the finder `clipdistill/__init__.py` installs, just before the first
torchvision import.
"""

from __future__ import annotations

import torch

_LIB = None  # keep the Library alive: dropping it would unregister the schemas


def _has_op(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def apply() -> bool:
    """Define the missing schemas if needed. Returns True when the shim was applied."""
    global _LIB
    if _LIB is not None:
        return True
    if torch.version.cuda is not None or _has_op("nms"):
        return False
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


APPLIED = apply()
