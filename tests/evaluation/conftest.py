"""Tiny evaluation data written on the fly: a 5-class ImageFolder and a retrieval JSONL."""

from __future__ import annotations

import json

import pytest
from eval_helpers import COLOURS, write_imagefolder
from PIL import Image


@pytest.fixture(scope="session")
def imagefolder(tmp_path_factory):
    return write_imagefolder(tmp_path_factory.mktemp("cls") / "colours")


@pytest.fixture(scope="session")
def retrieval_jsonl(tmp_path_factory):
    root = tmp_path_factory.mktemp("ret")
    rows = []
    for i, (c, rgb) in enumerate(COLOURS.items()):
        Image.new("RGB", (32, 32), rgb).save(root / f"{i}.png")
        rows.append({"image": f"{i}.png", "caption": f"a {c} square"})
        if i % 2 == 0:  # some images have a second caption, as in COCO
            rows.append({"image": f"{i}.png", "caption": f"something {c}"})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root / "captions.jsonl"
