"""The embedded procedural world: a stand-in for real image-text data and VQA / SNLI-VE / VCR (docs/world.md)."""

from clipdistill.world.build import SIZES, build_world

__all__ = ["SIZES", "build_world"]
