"""Image-text sources: webdataset tar shards, CSV/TSV, JSONL, ImageFolder and the embedded world.

Every source yields `Sample(key, image, text)` with a stable key (a CSV row id or key column, a shard name +
member key, an ImageFolder relative path) so later stages can join features, cluster labels and kept-lists
back to samples. Bad data never crashes a run: each skipped sample is counted under a reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from clipdistill.errors import DataError

IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "bmp", "ppm"}
TEXT_EXTS = {"txt", "text", "caption"}


@dataclass
class Sample:
    key: str
    image: Image.Image
    text: str


class SkipCounter(Counter):
    """Skipped samples per reason (undecodable_image, zero_byte, missing_caption, missing_image, unsafe_path,
    truncated_tar, ...)."""

    @property
    def total(self) -> int:
        return sum(self.values())


def decode_image(data: bytes) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None) or (None, skip reason)."""
    if not data:
        return None, "zero_byte"
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB"), None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None, "undecodable_image"


def read_image_file(path: Path) -> tuple[Image.Image | None, str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "missing_image"
    except OSError:
        return None, "unreadable_image"
    return decode_image(data)


class MapSource:
    """A source whose rows (key, image path, caption) are known up front: random access, cheap key lookup."""

    kind = "map"

    def __init__(self, name: str, keys: list[str], paths: list[Path], texts: list[str | None]):
        if len(set(keys)) != len(keys):
            dup = next(k for k, n in Counter(keys).items() if n > 1)
            raise DataError(f"{name}: sample keys must be unique; {dup!r} appears more than once")
        self.name, self.keys, self.paths, self.texts = name, keys, paths, texts
        self.skips = SkipCounter()

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, i: int) -> tuple[Sample | None, str | None]:
        """(sample, None) or (None, reason); does not touch the counter (safe in loader workers)."""
        text = self.texts[i]
        if text is None or not str(text).strip():
            return None, "missing_caption"
        image, reason = read_image_file(self.paths[i])
        if image is None:
            return None, reason
        return Sample(self.keys[i], image, str(text)), None

    def __getitem__(self, i: int) -> Sample | None:
        sample, reason = self.load(i)
        if reason:
            self.skips[reason] += 1
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            if (s := self[i]) is not None:
                yield s

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for k, p, t in zip(self.keys, self.paths, self.texts, strict=True):
            size = p.stat().st_size if p.is_file() else -1
            h.update(f"{k}\0{p.name}\0{size}\0{t}\n".encode())
        return h.hexdigest()


def read_table(path: Path) -> list[dict]:
    """Rows of a JSONL, or of a CSV / TSV (.tsv / .tab) with a header line, as dicts."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        return rows
    delimiter = "\t" if path.suffix in (".tsv", ".tab") else ","
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def open_table(path: str | Path, image_col: str = "image", caption_col: str = "caption",
               key_col: str = "key") -> MapSource:
    """CSV/TSV/JSONL of (image path, caption); paths relative to the file's folder. `key_col` if present."""
    path = Path(path)
    rows = read_table(path)
    if not rows:
        raise DataError(f"{path}: no rows")
    if image_col not in rows[0]:
        raise DataError(f"{path}: no {image_col!r} column (columns: {', '.join(rows[0])}); set the image column name")
    if caption_col not in rows[0]:
        raise DataError(f"{path}: no {caption_col!r} column (columns: {', '.join(rows[0])}); "
                        "set the caption column name")
    keys = [str(r[key_col]) if key_col in r else f"row-{i}" for i, r in enumerate(rows)]
    paths = [path.parent / str(r[image_col] or "") for r in rows]
    return MapSource(str(path), keys, paths, [r.get(caption_col) for r in rows])


def open_imagefolder(root: str | Path, template: str = "a photo of a {c}.") -> MapSource:
    """ImageFolder (DIR/<class>/<image>) with `classnames.txt` if present; the text is the prompted class name."""
    root = Path(root)
    folders = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not folders:
        raise DataError(f"{root}: no class sub-folders (expected DIR/<class>/<images>)")
    names_file = root / "classnames.txt"
    names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()] if names_file.is_file() else []
    if names and len(names) != len(folders):
        raise DataError(f"{names_file}: {len(names)} class names for {len(folders)} class folders")
    keys, paths, texts = [], [], []
    for ci, folder in enumerate(folders):
        cname = names[ci] if names else folder.name.replace("_", " ")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower().lstrip(".") in IMAGE_EXTS:
                keys.append(f"{folder.name}/{p.name}")
                paths.append(p)
                texts.append(template.format(c=cname))
    return MapSource(str(root), keys, paths, texts)


def open_images(root: str | Path) -> MapSource:
    """Every image file under DIR (recursively), keyed by its path relative to DIR; the text is that key.

    For stores of images alone (CLIP-TD's cached teacher reads only the image half): a task's images are
    embedded once and every fine-tune cell reads them back by the same relative path.
    """
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS) \
        if root.is_dir() else []
    if not paths:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTS))}) under this folder")
    keys = [p.relative_to(root).as_posix() for p in paths]
    return MapSource(str(root), keys, paths, list(keys))


def expand_shards(pattern: str) -> list[Path]:
    from braceexpand import braceexpand

    paths = [Path(p) for p in braceexpand(pattern)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} shards not found, e.g. {missing[0]}")
    return paths


def unsafe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts


def _has_end_marker(path: Path, offset: int) -> bool:
    """A complete tar ends with zero blocks; tarfile stops quietly at EOF on a file cut at a header."""
    with open(path, "rb") as f:
        f.seek(offset)
        block = f.read(512)
    return len(block) == 512 and not block.strip(b"\0")


class ShardSource:
    """webdataset-layout tar shards (`KEY.jpg` + `KEY.txt` members), read as a stream.

    Read with `tarfile` rather than webdataset's pipeline so each kind of bad member is counted, not raised:
    a truncated tar ends that shard (counted) and the next shard is read.
    """

    kind = "stream"

    def __init__(self, pattern: str, resampled: bool = False, seed: int = 0):
        self.pattern, self.shards, self.resampled, self.seed = pattern, expand_shards(pattern), resampled, seed
        self.skips = SkipCounter()

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.shards:
            h.update(f"{p.name}\0{p.stat().st_size}\n".encode())
        return h.hexdigest()

    def shard_order(self, epoch: int = 0) -> Iterator[Path]:
        if not self.resampled:
            yield from self.shards
            return
        rng = random.Random(self.seed * 100003 + epoch)
        while True:  # infinite resampled stream (webdataset's `resampled=True` semantics)
            yield rng.choice(self.shards)

    def iter_shard(self, path: Path, counter: Counter) -> Iterator[Sample]:
        group_key, parts = None, {}
        size = path.stat().st_size
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    if unsafe_member(member.name):
                        counter["unsafe_path"] += 1
                        continue
                    stem, _, ext = member.name.partition(".")
                    if stem != group_key:  # a new key's header proves the previous sample complete
                        yield from self._emit(path, group_key, parts, counter)
                        group_key, parts = stem, {}
                    if member.offset_data + member.size > size:
                        raise EOFError("member runs past the end of the file")
                    parts[ext.lower()] = tar.extractfile(member).read()
                if not _has_end_marker(path, tar.offset):
                    raise EOFError("no end-of-archive marker")
        except (tarfile.TarError, EOFError, OSError):
            counter["truncated_tar"] += 1
            return  # the group in flight may be incomplete: dropped with the shard's tail
        yield from self._emit(path, group_key, parts, counter)

    def _emit(self, path: Path, key: str | None, parts: dict, counter: Counter) -> Iterator[Sample]:
        if key is None:
            return
        img = next((parts[e] for e in parts if e in IMAGE_EXTS), None)
        txt = next((parts[e] for e in parts if e in TEXT_EXTS), None)
        if img is None:
            counter["missing_image"] += 1
            return
        if txt is None or not txt.strip():
            counter["missing_caption"] += 1
            return
        image, reason = decode_image(img)
        if image is None:
            counter[reason] += 1
            return
        yield Sample(f"{path.stem}/{key}", image, txt.decode("utf-8", errors="replace").strip())

    def __iter__(self) -> Iterator[Sample]:
        for shard in self.shard_order():
            yield from self.iter_shard(shard, self.skips)


def open_source(spec: str, *, image_col: str = "image", caption_col: str = "caption", key_col: str = "key",
                resampled: bool = False, seed: int = 0) -> MapSource | ShardSource:
    """`world:DIR` | `imagefolder:DIR` | `images:DIR` | `*.csv` / `*.tsv` / `*.jsonl` |
    tar shards (brace patterns allowed)."""
    if spec.startswith("world:"):
        root = Path(spec[len("world:"):])
        if not (root / "pairs.csv").is_file():
            raise DataError(f"{root} is not a clipdistill world (no pairs.csv); build one with `clipdistill world`")
        return open_table(root / "pairs.csv")
    if spec.startswith("imagefolder:"):
        return open_imagefolder(spec[len("imagefolder:"):])
    if spec.startswith("images:"):
        return open_images(spec[len("images:"):])
    if spec.endswith((".csv", ".tsv", ".tab", ".jsonl")):
        return open_table(spec, image_col, caption_col, key_col)
    if ".tar" in spec:
        return ShardSource(spec, resampled=resampled, seed=seed)
    raise DataError(f"cannot tell what kind of source {spec!r} is: use world:DIR, imagefolder:DIR, images:DIR, "
                    "a .csv/.tsv/.jsonl file, or .tar shards such as shards/{00000..00009}.tar")
