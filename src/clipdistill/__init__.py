"""clipdistill: distil CLIP into smaller CLIPs and into vision-language task models."""

import sys as _sys
from importlib.abc import MetaPathFinder as _MetaPathFinder

__version__ = "0.1.0"


class _ShimBeforeTorchvision(_MetaPathFinder):
    """Applies `_tv_compat` the moment anything first imports torchvision (open_clip, timm, our code).

    Importing the shim eagerly here would import torch with the package, and `clipdistill --help` would take
    seconds; a finder consulted before the normal ones keeps the shim ahead of torchvision at no import cost.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            _sys.meta_path.remove(self)  # once: the shim imports torch, never torchvision
            from clipdistill import _tv_compat  # noqa: F401
        return None  # the normal finders load the module itself


if "torchvision" in _sys.modules:  # imported before us: the shim can no longer come first, but is still needed
    from clipdistill import _tv_compat  # noqa: F401
elif not any(isinstance(f, _ShimBeforeTorchvision) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _ShimBeforeTorchvision())
