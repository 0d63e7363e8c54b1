"""Evaluation sets: a classification ImageFolder and an image -> captions retrieval set.

Both are read lazily (paths in memory, images decoded on demand) and expose `load(i)`, which returns
None for an image that cannot be decoded: evaluation counts it as a skip instead of failing.

- Classification: `DIR/<class>/*.jpg|png...` (torchvision ImageFolder order: sorted folder names),
  optional `DIR/classnames.txt` (one name per line, in that order; CLIP_benchmark's
  --custom_classname_file format) and `DIR/templates.txt` (one prompt per line with `{c}`).
- Retrieval: a JSONL or CSV/TSV of (image, caption) rows or (image, [captions]) rows; rows with the
  same image are grouped, so an image has several captions as in COCO / Flickr30k.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from clipdistill.data.sources import read_table
from clipdistill.errors import DataError

# torchvision 0.28's ImageFolder list (`torchvision.datasets.folder.IMG_EXTENSIONS`), which CLIP_benchmark reads
# through: a class folder holding other files (.gif) must score as it does there, so this is not the training list.
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_TEMPLATES = ["a photo of a {c}."]
IMAGE_KEYS = ("image", "filepath", "file_name", "path")
CAPTION_KEYS = ("caption", "text", "title")
CAPTIONS_KEYS = ("captions", "texts")


def load_image(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _fingerprint(root: Path, paths: list[Path], extra: object) -> str:
    """Relative paths + sizes + the text side (class names, templates or captions)."""
    h = hashlib.sha256()
    for p in paths:
        size = p.stat().st_size if p.is_file() else -1  # a missing image is a counted skip later
        h.update(f"{p.relative_to(root) if p.is_relative_to(root) else p}\0{size}\n".encode())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@dataclass
class ClassificationSet:
    name: str
    root: Path
    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    templates: list[str]
    _fp: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image | None:
        return load_image(self.paths[i])

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = _fingerprint(self.root, self.paths, [self.labels, self.classnames, self.templates])
        return self._fp


def _check_templates(templates: list[str], where: str) -> list[str]:
    if not templates:
        raise DataError(f"{where}: no templates")
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise DataError(f"{where}: every template needs '{{c}}' for the class name; not: {bad[0]!r}")
    return templates


def open_imagefolder(root: str | Path, *, classnames_file: str | Path | None = None,
                     templates_file: str | Path | None = None, name: str | None = None) -> ClassificationSet:
    """Read an ImageFolder (+ optional classnames.txt / templates.txt, or the given files)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected an ImageFolder: one sub-folder per class)")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no class sub-folders (expected DIR/<class>/<image files>)")
    paths, labels = [], []
    for label, d in enumerate(folders):
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTS and p.is_file():
                paths.append(p)
                labels.append(label)
    if not paths:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTS)}) in the class folders")
    cn_path = Path(classnames_file) if classnames_file else root / "classnames.txt"
    if cn_path.is_file():
        classnames = _read_lines(cn_path)
        if len(classnames) != len(folders):
            raise DataError(f"{cn_path}: {len(classnames)} class names for {len(folders)} class folders")
    elif classnames_file:
        raise DataError(f"{cn_path}: no such class-names file")
    else:
        classnames = [d.name.replace("_", " ") for d in folders]
    tp_path = Path(templates_file) if templates_file else root / "templates.txt"
    if tp_path.is_file():
        templates = _check_templates(_read_lines(tp_path), str(tp_path))
    elif templates_file:
        raise DataError(f"{tp_path}: no such templates file")
    else:
        templates = DEFAULT_TEMPLATES
    return ClassificationSet(name or root.name, root, paths, labels, classnames, templates)


@dataclass
class RetrievalSet:
    name: str
    root: Path
    images: list[Path]
    captions: list[list[str]]
    _fp: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> Image.Image | None:
        return load_image(self.images[i])

    def fingerprint(self) -> str:
        if self._fp is None:
            self._fp = _fingerprint(self.root, self.images, self.captions)
        return self._fp


def _pick(row: dict, keys: tuple[str, ...]) -> object:
    return next((row[k] for k in keys if k in row), None)


def open_retrieval(source: str | Path, name: str | None = None) -> RetrievalSet:
    """Read a JSONL/CSV/TSV of image-caption rows (or a folder holding exactly one such file)."""
    path = Path(source)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".csv", ".tsv"))
        if len(found) != 1:
            raise DataError(f"{path}: expected one .jsonl/.csv/.tsv of image-caption rows, found {len(found)}")
        path = found[0]
    if not path.is_file() or path.suffix not in (".jsonl", ".csv", ".tsv"):
        raise DataError(f"{source}: expected a .jsonl, .csv or .tsv file of (image, caption) rows")
    groups: dict[Path, list[str]] = {}
    for n, row in enumerate(read_table(path), 1):
        image = _pick(row, IMAGE_KEYS)
        caps = _pick(row, CAPTIONS_KEYS)
        caps = caps if isinstance(caps, list) else [_pick(row, CAPTION_KEYS)]
        caps = [c for c in caps if isinstance(c, str) and c.strip()]
        if not isinstance(image, str) or not caps:
            raise DataError(f"{path}: row {n} needs an image path ({'/'.join(IMAGE_KEYS)}) and a caption "
                            f"({'/'.join(CAPTION_KEYS + CAPTIONS_KEYS)})")
        groups.setdefault((path.parent / image).resolve(), []).extend(caps)
    if not groups:
        raise DataError(f"{path}: no rows")
    return RetrievalSet(name or path.stem, path.parent.resolve(), list(groups), list(groups.values()))
