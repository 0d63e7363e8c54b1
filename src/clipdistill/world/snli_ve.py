"""SNLI-VE-format visual entailment items on world scenes.

Our world's label semantics (a stand-in, stated in docs/world.md): a hypothesis names one object by colour
and shape and states one property of it. entailment = the object is in the image and has the property;
contradiction = it is there and does not; neutral = no such object in the image (nothing to judge).
All three are drawn from the same text distribution, so the hypothesis alone is at chance.
"""

from __future__ import annotations

import random

from clipdistill.world.scene import POSITIONS, SIZES, TEXTURES, Scene, sample_object
from clipdistill.world.text import caption

LABELS = ("entailment", "neutral", "contradiction")
_PROPS = {"size": SIZES, "pos": POSITIONS, "texture": TEXTURES}
_PHRASE = {"small": "is small", "large": "is large", "left": "is on the left", "right": "is on the right",
           "top": "is at the top", "bottom": "is at the bottom", "solid": "is plain", "striped": "is striped",
           "dotted": "is dotted"}


def _hypothesis(scene: Scene, label: str, rng: random.Random) -> str:
    prop = rng.choice(list(_PROPS))
    if label == "neutral":
        o = sample_object(rng, banned=frozenset((p.color, p.shape) for p in scene.objects))
        value = rng.choice(_PROPS[prop])
    else:
        o = rng.choice(scene.objects)
        value = getattr(o, prop)
        if label == "contradiction":
            value = rng.choice([v for v in _PROPS[prop] if v != value])
    return f"The {o.color} {o.shape} {_PHRASE[value]}."


def make_snli_ve(scenes: list[Scene], rng: random.Random, *,
                 first_image_id: int) -> tuple[list[dict], dict[str, Scene]]:
    """One hypothesis per label per image, as SNLI collected them; returns (jsonl rows, file name -> scene)."""
    rows, images = [], {}
    for i, scene in enumerate(scenes):
        flickr_id = str(first_image_id + i)
        images[f"{flickr_id}.png"] = scene
        premise = caption(scene, rng)
        for label in LABELS:
            caption_id = f"{flickr_id}.jpg#{rng.randrange(5)}"
            rows.append({
                "Flickr30K_ID": flickr_id, "sentence1": premise, "sentence2": _hypothesis(scene, label, rng),
                "gold_label": label, "annotator_labels": [label], "captionID": caption_id,
                "pairID": f"{caption_id}r1{label[0]}", "style": scene.style,
            })
    return rows, images
