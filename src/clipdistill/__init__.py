"""clipdistill: distil CLIP into smaller CLIPs and into vision-language task models."""

from clipdistill import _tv_compat  # noqa: F401  (must run before anything imports torchvision)

__version__ = "0.1.0"
