"""Scenes of the embedded world: attribute vocabulary, a long-tailed sampler and a PIL renderer.

A scene is 1-3 shapes (shape, colour, size, position, texture) on a background, drawn in one of two
rendering styles ("flat" = filled shapes, "sketch" = outlines on paper: the domain-shift style).
Shapes and colours follow independent Zipf-like marginals (a long tail of concepts); size, position and
texture are uniform so that task answers about them carry no text-only prior.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "ring")
COLORS = {
    "red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (235, 210, 40),
    "white": (245, 245, 245), "purple": (140, 60, 190), "orange": (245, 140, 30), "pink": (240, 130, 190),
    "cyan": (40, 210, 220), "brown": (130, 80, 40),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom")
TEXTURES = ("solid", "striped", "dotted")
BACKGROUNDS = {"gray": (120, 120, 120), "grass": (70, 120, 50), "sky": (110, 160, 215), "sand": (200, 180, 130),
               "night": (25, 25, 50)}
STYLES = ("flat", "sketch")
CENTRES = {"left": (14, 32), "right": (50, 32), "top": (32, 14), "bottom": (32, 50)}
RADIUS = {"small": 7, "large": 11}


def zipf_weights(n: int, s: float = 1.0) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(n)]


SHAPE_WEIGHTS = zipf_weights(len(SHAPES))
COLOR_WEIGHTS = zipf_weights(len(COLORS))


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    pos: str
    texture: str

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    style: str = "flat"
    # seeds the few-pixel jitter of positions and colours; copies with another value are near-duplicates
    jitter: int = 0

    def canonical(self) -> tuple:
        """The scene without its jitter: equal for near-duplicates."""
        return (self.objects, self.background, self.style)


def sample_object(rng: random.Random, banned: frozenset[tuple[str, str]] = frozenset()) -> Obj:
    """One object; (colour, shape) combinations in `banned` are held out (redrawn)."""
    while True:
        shape = rng.choices(SHAPES, SHAPE_WEIGHTS)[0]
        color = rng.choices(list(COLORS), COLOR_WEIGHTS)[0]
        if (color, shape) not in banned:
            return Obj(shape, color, rng.choice(SIZES), rng.choice(POSITIONS), rng.choice(TEXTURES))


def sample_scene(rng: random.Random, *, style: str = "flat", min_objects: int = 1, max_objects: int = 3,
                 banned: frozenset[tuple[str, str]] = frozenset(), unique_shapes: bool = True) -> Scene:
    """Objects at distinct positions; shapes are distinct too (so "the circle" names one object)."""
    n = rng.randint(min_objects, max_objects)
    objects: list[Obj] = []
    while len(objects) < n:
        o = sample_object(rng, banned)
        if any(o.pos == p.pos or (unique_shapes and o.shape == p.shape) for p in objects):
            continue
        objects.append(o)
    return Scene(tuple(objects), rng.choice(list(BACKGROUNDS)), style, rng.randrange(1 << 30))


def with_object(scene: Scene, index: int, **changes: str) -> Scene:
    objects = list(scene.objects)
    objects[index] = replace(objects[index], **changes)
    return replace(scene, objects=tuple(objects))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, start: float, radii: tuple[float, ...] = (1.0,)) -> list[tuple[float, float]]:
        pts = []
        for i in range(n * len(radii)):
            a = start + 2 * math.pi * i / (n * len(radii))
            k = radii[i % len(radii)]
            pts.append((cx + r * k * math.cos(a), cy + r * k * math.sin(a)))
        return pts

    if shape == "triangle":
        return ring(3, -math.pi / 2)
    if shape == "diamond":
        return ring(4, -math.pi / 2)
    if shape == "hexagon":
        return ring(6, 0)
    if shape == "star":
        return ring(5, -math.pi / 2, (1.0, 0.45))
    if shape == "cross":
        t = r * 0.35
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def _shape_mask(obj: Obj, cx: float, cy: float, r: float, outline: bool) -> Image.Image:
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    d = ImageDraw.Draw(mask)
    box = (cx - r, cy - r, cx + r, cy + r)
    kw = {"outline": 255, "width": 2} if outline else {"fill": 255}
    if obj.shape == "circle":
        d.ellipse(box, **kw)
    elif obj.shape == "square":
        d.rectangle((cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85), **kw)
    elif obj.shape == "ring":
        d.ellipse(box, outline=255, width=max(2, int(r * 0.4)) if not outline else 2)
        if outline:
            d.ellipse((cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5), outline=255, width=1)
    else:
        d.polygon(_polygon(obj.shape, cx, cy, r), **kw)
    return mask


def _texture(obj: Obj, rgb: tuple[int, int, int]) -> Image.Image:
    fill = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), rgb)
    if obj.texture == "solid":
        return fill
    d = ImageDraw.Draw(fill)
    other = tuple(int(c * 0.45) for c in rgb)
    if obj.texture == "striped":
        for x in range(-IMAGE_SIZE, IMAGE_SIZE, 5):
            d.line((x, 0, x + IMAGE_SIZE, IMAGE_SIZE), fill=other, width=2)
    else:
        for y in range(1, IMAGE_SIZE, 5):
            for x in range(1 + (y // 5) % 2 * 2, IMAGE_SIZE, 5):
                d.ellipse((x, y, x + 2, y + 2), fill=other)
    return fill


def render(scene: Scene) -> Image.Image:
    """64x64 RGB image; deterministic for the scene (jitter included)."""
    rng = random.Random(scene.jitter)
    if scene.style == "sketch":
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (235, 232, 222))
        d = ImageDraw.Draw(img)
        tint = BACKGROUNDS[scene.background]
        for _ in range(6):  # pencil strokes tinted by the background name
            x, y = rng.randrange(IMAGE_SIZE), rng.randrange(IMAGE_SIZE)
            d.line((x, y, x + rng.randint(-12, 12), y + rng.randint(-4, 4)), fill=tint, width=1)
    else:
        img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    for obj in scene.objects:
        cx, cy = CENTRES[obj.pos]
        cx, cy = cx + rng.uniform(-2.5, 2.5), cy + rng.uniform(-2.5, 2.5)
        r = RADIUS[obj.size] + rng.uniform(-1, 1)
        rgb = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in COLORS[obj.color])
        mask = _shape_mask(obj, cx, cy, r, outline=scene.style == "sketch")
        img.paste(_texture(obj, rgb) if scene.style == "flat" else Image.new("RGB", img.size, rgb), (0, 0), mask)
    return img
