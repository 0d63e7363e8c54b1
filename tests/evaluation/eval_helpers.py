"""Helpers for evaluation tests: tiny ImageFolders written on the fly."""

from __future__ import annotations

from PIL import Image

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 30, 220), "yellow": (230, 220, 20),
           "black": (10, 10, 10)}


def write_imagefolder(root, per_class: int = 3, shift: int = 0):
    for c, (r, g, b) in COLOURS.items():
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            v = (i * 7 + shift) % 30
            Image.new("RGB", (40, 36), (max(r - v, 0), max(g - v, 0), max(b - v, 0))).save(root / c / f"{i}.png")
    (root / "templates.txt").write_text("a photo of a {c} thing.\na {c} square.\n")
    return root
