"""Captions of world scenes, generated from their attributes in several phrasings."""

from __future__ import annotations

import random

from clipdistill.world.scene import COLORS, POSITIONS, SHAPES, SIZES, Obj, Scene

POS_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
# The captions' vocabulary by attribute type (what one-attribute swaps and cloze probes use). Positions are whole
# phrases so a swap keeps the preposition right ("on the left" -> "at the top", never "at the left"): a grammar
# slip only negatives make would let a model tell them from the text alone. Counts are the digits of
# "... with N shapes".
WORLD_ATTRIBUTES: dict[str, list[str]] = {
    "colour": list(COLORS),
    "shape": list(SHAPES),
    "count": ["1", "2", "3", "4"],
    "position": [POS_PHRASE[p] for p in POSITIONS],
    "size": list(SIZES),
}


def world_attributes() -> dict[str, list[str]]:
    """A fresh copy of `WORLD_ATTRIBUTES` (a config default that a run may edit)."""
    return {k: list(v) for k, v in WORLD_ATTRIBUTES.items()}


_MEDIUM = {"flat": ("a picture", "an image", "a photo"), "sketch": ("a sketch", "a drawing", "a pencil sketch")}


def describe(o: Obj, detail: int) -> str:
    """Noun phrase with `detail` in 0..2: colour+shape, + size, + texture."""
    words = []
    if detail >= 1:
        words.append(o.size)
    words.append(o.color)
    if detail >= 2 and o.texture != "solid":
        words.append(o.texture)
    words.append(o.shape)
    return " ".join(words)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, rng: random.Random) -> str:
    medium = rng.choice(_MEDIUM[scene.style])
    objs = list(scene.objects)
    rng.shuffle(objs)
    form = rng.randrange(4)
    if form == 0:
        return f"{medium} of {_join(['a ' + describe(o, 1) for o in objs])} on a {scene.background} background"
    if form == 1:
        return f"{_join(['a ' + describe(o, 2) + ' ' + POS_PHRASE[o.pos] for o in objs])}"
    if form == 2:
        return f"{medium} showing {_join(['a ' + describe(o, 0) for o in objs])}"
    return f"there is a {describe(objs[0], 2)} {POS_PHRASE[objs[0].pos]} in {medium} with {len(objs)} shapes"


def captions(scene: Scene, rng: random.Random, n: int) -> list[str]:
    """`n` different phrasings where possible (retrieval has several captions per image)."""
    out: list[str] = []
    for _ in range(n * 8):
        c = caption(scene, rng)
        if c not in out:
            out.append(c)
        if len(out) == n:
            break
    return out
