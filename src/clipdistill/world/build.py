"""`build_world(out, size, seed)`: write the whole embedded world (layout in docs/world.md)."""

from __future__ import annotations

import csv
import io
import json
import random
import tarfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text
from clipdistill.progress import track
from clipdistill.splits import vqa_cp_assign
from clipdistill.world.scene import COLORS, SHAPES, Scene, render, sample_scene, with_object
from clipdistill.world.snli_ve import make_snli_ve
from clipdistill.world.text import caption, captions
from clipdistill.world.vcr import MOVIES, SOURCE_STYLE, make_vcr, metadata
from clipdistill.world.vqa import VQASet, make_vqa

GENERATOR_VERSION = 1
SHARD_SIZE = 1000
# share of pair scenes given 1-4 jittered copies. At 0.15 the `default` world's 24,000 pairs hold ~15,200
# distinct scenes (63%), so keeping 56% of it must drop distinct content; ~0.4 makes half the pairs copies,
# closer to the web redundancy CLIP-CID's balance step removes (`--dup-rate`).
DUP_RATE = 0.15


@dataclass(frozen=True)
class WorldSize:
    pairs: int
    vqa_images: tuple[int, int]  # train, val (3 questions each)
    snli_images: tuple[int, int, int]  # train, dev, test (3 hypotheses each)
    vcr: tuple[int, int]  # train, val questions
    per_class: tuple[int, int]  # classification images per class: train, test
    retrieval: int
    shift_images: int  # images per shifted / held-out task file


SIZES = {
    "tiny": WorldSize(300, (45, 25), (45, 25, 25), (120, 60), (8, 4), 40, 20),
    "small": WorldSize(3000, (400, 150), (400, 150, 150), (1000, 400), (60, 20), 300, 150),
    "default": WorldSize(24000, (3000, 1000), (3000, 1000, 1000), (8000, 2000), (300, 50), 1000, 800),
}


class _Writer:
    """Renders scenes to PNG under the world root (PNG: lossless and byte-identical for a seed)."""

    def __init__(self, root: Path):
        self.root = root
        self.count = 0

    def png(self, scene: Scene) -> bytes:
        buf = io.BytesIO()
        render(scene).save(buf, format="PNG")
        return buf.getvalue()

    def write(self, rel: str, scene: Scene) -> bytes:
        data = self.png(scene)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.count += 1
        return data

    def write_all(self, folder: str, images: dict[str, Scene]) -> None:
        for name, scene in images.items():
            self.write(f"{folder}/{name}", scene)


def _fresh_folder(out: str | Path, hint: str) -> Path:
    """`out` as a Path; a UserError when it holds anything (nothing here writes over earlier files)."""
    root = Path(out)
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} is not empty: {hint}")
    return root


def _rng(seed: int, part: str) -> random.Random:
    return random.Random(f"clipdistill-world:{seed}:{part}")  # one stream per part: parts do not shift each other


def heldout_combos(seed: int, n: int = 6) -> frozenset[tuple[str, str]]:
    """(colour, shape) pairs kept out of every training file; drawn among the frequent ones so they matter."""
    rng = _rng(seed, "heldout")
    pool = [(c, s) for c in list(COLORS)[:6] for s in SHAPES[:5]]
    return frozenset(rng.sample(pool, n))


def _heldout_scene(rng: random.Random, combos: frozenset[tuple[str, str]]) -> Scene:
    """A scene whose first object is a held-out combination (other objects are ordinary)."""
    while True:
        scene = sample_scene(rng, banned=combos)
        colour, shape = rng.choice(sorted(combos))
        if all(o.shape != shape for o in scene.objects[1:]):
            return with_object(scene, 0, color=colour, shape=shape)


def _write_pairs(root: Path, w: _Writer, n: int, rng: random.Random, banned: frozenset,
                 dup_rate: float) -> dict[str, int]:
    """pairs.csv + webdataset shards + pairs_groundtruth.json, with planted near-duplicate clusters."""
    scenes: list[tuple[Scene, bool]] = []
    while len(scenes) < n:
        base = sample_scene(rng, style="sketch" if rng.random() < 0.1 else "flat", banned=banned)
        copies = rng.randint(1, 4) if rng.random() < dup_rate else 0
        scenes.append((base, copies > 0))
        scenes.extend((replace(base, jitter=rng.randrange(1 << 30)), True) for _ in range(copies))
    scenes = scenes[:n]
    groups: dict[tuple, int] = {}
    for scene, _ in scenes:
        groups.setdefault(scene.canonical(), len(groups))
    sizes: dict[int, int] = {}
    for scene, _ in scenes:
        sizes[groups[scene.canonical()]] = sizes.get(groups[scene.canonical()], 0) + 1
    (root / "pairs").mkdir(parents=True, exist_ok=True)
    rows, truth, tar = [], {}, None
    for i, (scene, planted) in enumerate(track(scenes, "world: pairs", unit="pairs", transient=True)):
        key = f"p{i:06d}"
        if i % SHARD_SIZE == 0:
            if tar:
                tar.close()
            tar = tarfile.open(root / "pairs" / f"shard-{i // SHARD_SIZE:05d}.tar", "w", format=tarfile.USTAR_FORMAT)
        text = caption(scene, rng)
        data = w.write(f"images/pairs/{key}.png", scene)
        for name, payload in ((f"{key}.png", data), (f"{key}.txt", text.encode())):
            info = tarfile.TarInfo(name)  # fixed metadata: identical bytes for a seed
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            tar.addfile(info, io.BytesIO(payload))
        rows.append({"key": key, "image": f"images/pairs/{key}.png", "caption": text, "style": scene.style})
        group = groups[scene.canonical()]
        truth[key] = {"group": group, "planted_duplicate": planted, "singleton": sizes[group] == 1}
    if tar:
        tar.close()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["key", "image", "caption", "style"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "pairs.csv", buf.getvalue())
    atomic_write_text(root / "pairs_groundtruth.json", json.dumps(truth, indent=0, sort_keys=True))
    return {"pairs": len(rows), "groups": len(groups), "shards": (len(rows) + SHARD_SIZE - 1) // SHARD_SIZE}


TEMPLATES = {"shape": ["a picture of a {c}.", "a {c} shape.", "a drawing of a {c}."],
             "color": ["a picture of a {c} shape.", "something {c}.", "a {c} object."]}


def _write_classify_split(root: Path, w: _Writer, name: str, folder: str, n: int, style: str,
                          rng: random.Random, banned: frozenset) -> int:
    """n single-object images per class of `name` (shape or color) under root/folder/<class>/, ImageFolder style."""
    classes = SHAPES if name == "shape" else tuple(COLORS)
    for cls in classes:
        for j in range(n):
            while True:
                scene = sample_scene(rng, style=style, min_objects=1, max_objects=1)
                scene = with_object(scene, 0, **{name: cls})
                o = scene.objects[0]
                if (o.color, o.shape) not in banned:
                    break
            w.write(f"{folder}/{cls}/{j:04d}.png", scene)
    atomic_write_text(root / folder / "classnames.txt", "\n".join(sorted(classes)) + "\n")
    atomic_write_text(root / folder / "templates.txt", "\n".join(TEMPLATES[name]) + "\n")
    return n * len(classes)


def _write_classify(root: Path, w: _Writer, size: WorldSize, rng: random.Random, banned: frozenset) -> dict[str, int]:
    counts = {}
    for name in ("shape", "color"):
        for split, n, style in (("train", size.per_class[0], "flat"), ("test", size.per_class[1], "flat"),
                                ("test_style", size.per_class[1], "sketch")):
            counts[f"{name}/{split}"] = _write_classify_split(root, w, name, f"classify/{name}/{split}", n, style,
                                                              rng, banned)
    return counts


def write_extra_test(world: str | Path, out: str | Path, per_class: int) -> dict[str, int]:
    """More flat classification test images for an existing world, under out/{shape,color}/<class>/.

    Drawn like the world's own test split (same scene sampler, same held-out combinations banned) from a
    stream of their own, so the world's files are untouched and runs trained on it stay valid; 400 shape test
    images put +-2.3 pt of sampling noise on a 30% score, 4,000 put +-0.7.
    """
    if per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {per_class}")
    if not (Path(world) / "world.json").is_file():
        raise UserError(f"{world} is not a world folder (no world.json): build one with `clipdistill world`")
    doc = json.loads((Path(world) / "world.json").read_text())
    root = _fresh_folder(out, "choose a new folder for the extra test images")
    seed, w = doc["seed"], _Writer(root)
    rng, banned = _rng(seed, "classify-extra-test"), heldout_combos(seed)
    return {name: _write_classify_split(root, w, name, name, per_class, "flat", rng, banned)
            for name in ("shape", "color")}


def _write_retrieval(root: Path, w: _Writer, size: WorldSize, rng: random.Random, banned: frozenset,
                     combos: frozenset) -> dict[str, int]:
    counts = {}
    for split in ("test", "test_style", "test_heldout"):
        lines = []
        for j in range(size.retrieval):
            if split == "test_heldout":
                scene = _heldout_scene(rng, combos)
            else:
                scene = sample_scene(rng, style="sketch" if split == "test_style" else "flat", banned=banned)
            rel = f"images/{split}/{j:05d}.png"
            w.write(f"retrieval/{rel}", scene)
            lines.append(json.dumps({"image": rel, "captions": captions(scene, rng, 3)}))
        atomic_write_text(root / "retrieval" / f"{split}.jsonl", "\n".join(lines) + "\n")
        counts[split] = len(lines)
    return counts


def _dump(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))


def _write_vqa_set(folder: Path, name: str, s: VQASet) -> None:
    _dump(folder / f"{name}_questions.json", s.questions)
    _dump(folder / f"{name}_annotations.json", s.annotations)


def _write_vqa(root: Path, w: _Writer, size: WorldSize, seed: int, banned: frozenset, combos: frozenset) -> dict:
    rng, folder = _rng(seed, "vqa"), root / "tasks" / "vqa"
    n_train, n_val = size.vqa_images
    sets = {
        "train": make_vqa([sample_scene(rng, banned=banned) for _ in range(n_train)], rng, subtype="train2014",
                          first_image_id=1),
        "val": make_vqa([sample_scene(rng, banned=banned) for _ in range(n_val)], rng, subtype="val2014",
                        first_image_id=200_000),
        "shift_style": make_vqa([sample_scene(rng, style="sketch", banned=banned) for _ in range(size.shift_images)],
                                rng, subtype="shiftstyle2014", first_image_id=400_000),
        "heldout": make_vqa([_heldout_scene(rng, combos) for _ in range(size.shift_images)], rng,
                            subtype="heldout2014", first_image_id=600_000),
    }
    for name, s in sets.items():
        w.write_all("tasks/vqa/images", s.images)
        _write_vqa_set(folder, name, s)
    # VQA-CP-like re-split of train + val (same images; answer priors per question type shifted)
    pooled = sets["train"].annotations["annotations"] + sets["val"].annotations["annotations"]
    questions = {q["question_id"]: q for s in (sets["train"], sets["val"]) for q in s.questions["questions"]}
    side = vqa_cp_assign(((str(a["question_id"]), a["question_type"], a["multiple_choice_answer"]) for a in pooled),
                         seed=seed)
    counts = {name: len(s.questions["questions"]) for name, s in sets.items()}
    for part in ("train", "test"):
        anns = [a for a in pooled if side[str(a["question_id"])] == part]
        qs = [questions[a["question_id"]] for a in anns]
        head = {k: v for k, v in sets["train"].questions.items() if k != "questions"} | {"data_subtype": f"cp_{part}"}
        ahead = ({k: v for k, v in sets["train"].annotations.items() if k != "annotations"}
                 | {"data_subtype": f"cp_{part}"})
        _write_vqa_set(folder, f"cp_{part}", VQASet({**head, "questions": qs}, {**ahead, "annotations": anns}))
        counts[f"cp_{part}"] = len(qs)
    return counts


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _write_snli_ve(root: Path, w: _Writer, size: WorldSize, seed: int, banned: frozenset, combos: frozenset) -> dict:
    rng, folder, counts = _rng(seed, "snli_ve"), root / "tasks" / "snli_ve", {}
    parts = [("train", size.snli_images[0], "flat"), ("dev", size.snli_images[1], "flat"),
             ("test", size.snli_images[2], "flat"), ("shift_style", size.shift_images, "sketch"),
             ("heldout", size.shift_images, "flat")]
    for i, (name, n, style) in enumerate(parts):
        scenes = ([_heldout_scene(rng, combos) for _ in range(n)] if name == "heldout"
                  else [sample_scene(rng, style=style, banned=banned) for _ in range(n)])
        rows, images = make_snli_ve(scenes, rng, first_image_id=1_000_000 * (i + 1))
        w.write_all("tasks/snli_ve/images", images)
        _write_jsonl(folder / f"snli_ve_{name}.jsonl", rows)
        counts[name] = len(rows)
    return counts


def _write_vcr(root: Path, w: _Writer, size: WorldSize, seed: int, banned: frozenset) -> dict:
    rng, folder, counts = _rng(seed, "vcr"), root / "tasks" / "vcr", {}
    movies = [m for ms in MOVIES.values() for m in ms]
    for name, n in (("train", size.vcr[0]), ("val", size.vcr[1])):
        order = [movies[rng.randrange(len(movies))] for _ in range(n)]
        scenes = [sample_scene(rng, style=SOURCE_STYLE[m.split("_")[0]], min_objects=4, max_objects=4,
                               banned=banned) for m in order]
        rows, images = make_vcr(scenes, order, rng, split=name)
        for rel, scene in images.items():
            w.write(f"tasks/vcr/vcr1images/{rel}", scene)
            atomic_write_text(root / "tasks/vcr/vcr1images" / rel.replace(".png", ".json"), json.dumps(metadata(scene)))
        _write_jsonl(folder / f"{name}.jsonl", rows)
        counts[name] = len(rows)
    return counts


def build_world(out: str | Path, size: str = "tiny", seed: int = 0, dup_rate: float | None = None) -> dict:
    """Write the world under `out` (must be empty or absent); returns the world.json document.

    `dup_rate`: share of pair scenes that get 1-4 jittered copies (near-duplicates; None: DUP_RATE). Only
    pairs.csv, its shards and ground truth depend on it; every other file is the same for a seed.
    """
    dup_rate = DUP_RATE if dup_rate is None else dup_rate
    if size not in SIZES:
        raise UserError(f"unknown world size {size!r}; choose one of {', '.join(SIZES)}")
    if not 0.0 <= dup_rate <= 1.0:
        raise UserError(f"--dup-rate must be between 0 and 1, got {dup_rate}")
    root = _fresh_folder(out, "choose a new --out folder (a world is never written over another)")
    root.mkdir(parents=True, exist_ok=True)
    spec, w, combos = SIZES[size], _Writer(root), heldout_combos(seed)
    counts = {
        "pairs": _write_pairs(root, w, spec.pairs, _rng(seed, "pairs"), combos, dup_rate),
        "classify": _write_classify(root, w, spec, _rng(seed, "classify"), combos),
        "retrieval": _write_retrieval(root, w, spec, _rng(seed, "retrieval"), combos, combos),
        "vqa": _write_vqa(root, w, spec, seed, combos, combos),
        "snli_ve": _write_snli_ve(root, w, spec, seed, combos, combos),
        "vcr": _write_vcr(root, w, spec, seed, combos),
    }
    doc = {
        "generator": "clipdistill.world", "generator_version": GENERATOR_VERSION, "size": size, "seed": seed,
        "dup_rate": dup_rate,
        "sizes": asdict(spec), "counts": counts, "images": w.count, "image_size": 64,
        "heldout_combos": sorted(f"{c} {s}" for c, s in combos),
        "layout": {
            "pairs": "pairs.csv (key,image,caption,style) + pairs/shard-XXXXX.tar + pairs_groundtruth.json",
            "classify": "classify/{shape,color}/{train,test,test_style}/<class>/*.png + classnames.txt + templates.txt",
            "retrieval": "retrieval/{test,test_style,test_heldout}.jsonl",
            "vqa": "tasks/vqa/{train,val,shift_style,heldout,cp_train,cp_test}_{questions,annotations}.json, images/",
            "snli_ve": "tasks/snli_ve/snli_ve_{train,dev,test,shift_style,heldout}.jsonl, images/",
            "vcr": "tasks/vcr/{train,val}.jsonl, vcr1images/<movie>/*.png + *.json",
        },
        "note": "a procedural stand-in for real data; see docs/world.md",
    }
    atomic_write_text(root / "world.json", json.dumps(doc, indent=2))
    return doc
