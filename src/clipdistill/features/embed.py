"""`embed_features`: one teacher pass over a data source into a feature store (layout in `store.py`).

Work is split into store shards (a tar shard of a stream source, or `shard_size` rows of a map source).
Each shard is computed from its own samples only, in a fixed order, so its bytes do not depend on which
process computed it, on how many processes there were, or on whether an earlier run crashed: a rerun
computes only the shards that are missing, and `torchrun --nproc_per_node N` gives rank r every N-th shard.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import DataLoader, Dataset, IterableDataset

from clipdistill.data import MapSource, ShardSource, SkipCounter, View, open_source
from clipdistill.data.loader import EncodedSample, Record, SkippedSamples, split_records
from clipdistill.data.sources import SourceOptions, same_source_spec, source_kwargs
from clipdistill.errors import UserError
from clipdistill.features.augment import AugmentOptions, views
from clipdistill.features.dedup import perceptual_hash
from clipdistill.features.store import STAGE, clean_temp, shard_name, write_shard
from clipdistill.manifest import atomic_write_text, check_manifest, write_manifest
from clipdistill.progress import StageProgress
from clipdistill.runfolder import StopSignals
from clipdistill.train.distributed import DistInfo, gather_rows, init_distributed, shutdown
from clipdistill.zoo import ClipModel, load_model
from clipdistill.zoo.spec import canonical_spec, same_model_spec

PLAN = "plan.json"


class EmbedOptions(SourceOptions):
    """The teacher pass; how the source is read comes from `SourceOptions` (columns, separator, limits)."""

    teacher: str = Field(..., description="teacher SPEC")
    data: str = Field(..., description="data SOURCE")
    tokens: bool = Field(False, description="also store per-token features (CLIP-TD)")
    augs: int = Field(0, ge=0, description="augmented views per image, stored with their replay parameters")
    augment: AugmentOptions = AugmentOptions()
    phash: bool = Field(False, description="also store each image's 64-bit perceptual hash (balance --perceptual)")
    shard_size: int = Field(1000, ge=1, description="rows per store shard for map sources (tar: one per tar)")
    batch_size: int = Field(64, ge=1)
    num_workers: int = Field(0, ge=0, description="decode workers per process")
    seed: int = Field(0, description="seeds the augmentation parameters")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    timeout_s: float = Field(1800.0, gt=0, description="how long a rank waits for the others at the end")


# -- what one shard reads ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Encoded(EncodedSample):
    """One kept sample, ready for the teacher (its one view), with what --phash and --augs add."""

    phash: int | None = None  # with --phash
    aug_image: torch.Tensor | None = None  # [K, 3, H, W] with --augs K
    aug_params: list | None = None  # the K views' replay parameters


@dataclass(frozen=True)
class EmbedBatch:
    """One batch of a store shard: the teacher's view of its kept samples and the drops made reading it."""

    keys: list[str]
    view: View | None  # None when every sample of the batch was dropped
    skips: SkipCounter
    phash: np.ndarray | None = None  # uint64 [B]
    aug_image: torch.Tensor | None = None  # [B, K, 3, H, W]
    aug_params: list | None = None  # per sample, its K views' parameters

    def pin_memory(self) -> EmbedBatch:
        """The tensors in page-locked memory, the other fields as they are: what the DataLoader's `pin_memory`
        calls on a batch object (on CUDA, `_loader` asks for it)."""
        return replace(self, view=None if self.view is None else self.view.pin_memory(),
                       aug_image=None if self.aug_image is None else self.aug_image.pin_memory())


class _Item:
    """Turns a Sample into tensors for the teacher (and its augmented views)."""

    def __init__(self, teacher: ClipModel, opts: EmbedOptions):
        self.transform, self.tokenizer, self.opts = teacher.eval_transform, teacher.tokenizer, opts

    def __call__(self, sample, index: int, note: str | None = None) -> _Encoded:
        phash = aug_image = params = None
        if self.opts.phash:  # of the picture as stored, before any transform
            phash = perceptual_hash(sample.image)
        if self.opts.augs:
            imgs, params = views(sample.image, sample.key, self.opts.augs, self.opts.seed, self.opts.augment)
            aug_image = torch.stack([self.transform(v) for v in imgs])
        view = (self.transform(sample.image), self.tokenizer([sample.text])[0])
        return _Encoded(sample.key, sample.text, index, (view,), note, phash=phash, aug_image=aug_image,
                        aug_params=params)


class _Rows(Dataset):
    def __init__(self, source: MapSource, rows: range, make: _Item):
        self.source, self.rows, self.make = source, rows, make

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Record:
        sample, reason = self.source.load(self.rows[i])
        if sample is None:
            return SkippedSamples({reason: 1})
        return self.make(sample, self.rows[i], note=reason or None)  # a kept sample's caption_truncated


class _Tar(IterableDataset):
    def __init__(self, source: ShardSource, path: Path, make: _Item):
        self.source, self.path, self.make = source, path, make

    def __iter__(self) -> Iterator[Record]:
        counts: Counter = Counter()
        for j, sample in enumerate(self.source.iter_shard(self.path, counts)):
            yield self.make(sample, j)
        if counts:  # the shard's drops, after its last kept sample
            yield SkippedSamples(dict(counts))


def _collate(items: list[Record]) -> EmbedBatch:
    good, skips = split_records(items)
    if not good:
        return EmbedBatch([], None, skips)
    first = good[0]
    images, ids = zip(*(it.views[0] for it in good), strict=True)
    return EmbedBatch(
        [it.key for it in good], View(torch.stack(images), torch.stack(ids)), skips,
        phash=None if first.phash is None else np.array([it.phash for it in good], dtype=np.uint64),
        aug_image=None if first.aug_image is None else torch.stack([it.aug_image for it in good]),
        aug_params=None if first.aug_params is None else [it.aug_params for it in good])


def plan_units(source: MapSource | ShardSource, shard_size: int) -> list[range | Path]:
    if isinstance(source, MapSource):
        return [range(lo, min(lo + shard_size, len(source))) for lo in range(0, len(source), shard_size)]
    if source.resampled:
        raise UserError("embed needs a finite source: resampled tar streams have no end")
    return list(source.shards)


def _loader(source, unit: range | Path, make: _Item, opts: EmbedOptions, pin: bool = False) -> DataLoader:
    """`pin`: batches come in page-locked memory (for a CUDA teacher: the copy to it then overlaps the reading)."""
    if isinstance(unit, range):
        return DataLoader(_Rows(source, unit, make), batch_size=opts.batch_size, num_workers=opts.num_workers,
                          collate_fn=_collate, pin_memory=pin)
    # one tar is one stream: a second worker would read the same members again
    return DataLoader(_Tar(source, unit, make), batch_size=opts.batch_size, num_workers=min(opts.num_workers, 1),
                      collate_fn=_collate, pin_memory=pin)


# -- the teacher pass --------------------------------------------------------------------------------

def _unit(x: torch.Tensor) -> np.ndarray:
    return F.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float16)


@torch.inference_mode()
def encode_batch(teacher: ClipModel, batch: EmbedBatch, tokens: bool, device: torch.device) -> dict[str, np.ndarray]:
    images, ids = batch.view.image.to(device, non_blocking=True), batch.view.text.to(device, non_blocking=True)
    out: dict[str, np.ndarray] = {}
    if tokens:  # one forward gives both the pooled embedding and the tokens
        pooled, patches = teacher.encode_image_tokens(images)
        out["image"], out["image_tokens"] = _unit(pooled), _unit(patches)
        pooled, toks, mask = teacher.encode_text_tokens(ids)
        out["text"], out["text_tokens"], out["text_mask"] = _unit(pooled), _unit(toks), mask.cpu().numpy()
    else:
        out["image"], out["text"] = _unit(teacher.encode_image(images)), _unit(teacher.encode_text(ids))
    if batch.aug_image is not None:
        b, k = batch.aug_image.shape[:2]
        flat = batch.aug_image.to(device, non_blocking=True).flatten(0, 1)
        out["aug_image"] = _unit(teacher.encode_image(flat)).reshape(b, k, -1)
    return out


def embed_shard(teacher: ClipModel, loader: DataLoader, opts: EmbedOptions, device: torch.device):
    keys: list[str] = []
    parts: dict[str, list[np.ndarray]] = {}
    params: list | None = [] if opts.augs else None
    skips: Counter = Counter()
    for batch in loader:
        skips.update(batch.skips)
        if not batch.keys:
            continue
        keys.extend(batch.keys)
        for name, arr in encode_batch(teacher, batch, opts.tokens, device).items():
            parts.setdefault(name, []).append(arr)
        if batch.phash is not None:
            parts.setdefault("phash", []).append(batch.phash)
        if params is not None:
            params.extend(batch.aug_params)
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    return keys, arrays, params, skips


def fields_for(opts: EmbedOptions) -> list[str]:
    return ["image", "text"] + (["image_tokens", "text_tokens", "text_mask"] if opts.tokens else []) + (
        ["aug_image"] if opts.augs else []) + (["phash"] if opts.phash else [])


def _plan(opts: EmbedOptions, teacher: ClipModel, source, units: list) -> dict:
    d = teacher.describe()
    bias = teacher.logit_bias  # a sigmoid (SigLIP) teacher: cached logit_kd needs it beside the scale
    sigmoid = {} if bias is None else {"logit_bias": float(bias.detach()),
                                       "sigmoid_scale": float(teacher.raw_logit_scale.detach().exp())}
    return {
        # the SPEC with local paths absolute: readers given another spelling of the same teacher still match
        "teacher": {"spec": canonical_spec(opts.teacher), "weights_sha256": teacher.weights_hash(),
                    "embed_dim": d["embed_dim"],
                    "logit_scale": float(teacher.logit_scale.detach()),
                    # the bias pairs with the unclamped scale (released SigLIPs pass 100; ClipModel clamps)
                    **sigmoid},
        "preprocessing": {"transform": "eval_transform", "image_size": d["image_size"], "image_mean": d["image_mean"],
                          "image_std": d["image_std"], "context_length": d["context_length"]},
        **({"teacher_load_warnings": teacher.load_warnings} if teacher.load_warnings else {}),  # e.g. QuickGELU
        "source": {"spec": opts.data, "fingerprint": source.fingerprint(), "kind": source.kind,
                   "options": source_kwargs(opts)},  # how to open it again (balance --data, report gallery)
        "options": {"tokens": opts.tokens, "augs": opts.augs, "seed": opts.seed, "shard_size": opts.shard_size,
                    "phash": opts.phash, "augment": opts.augment.model_dump(mode="json") if opts.augs else None},
        "shards": [shard_name(i) for i in range(len(units))],
        "fields": fields_for(opts),
    }


# source.options too: the same files read with other columns, pixel or caption limits give other samples (a plan
# written before they were recorded is refused: how it opened the source is unknown)
RESUME_KEYS = ["teacher.spec", "teacher.weights_sha256", "source.spec", "source.fingerprint", "options.tokens",
               "options.augs", "options.augment", "options.seed", "options.shard_size", "options.phash", "shards",
               *(f"source.options.{name}" for name in SourceOptions.model_fields)]


def _check_resume(out: Path, plan: dict) -> None:
    """A rerun into an existing folder must be the same job; otherwise its shards would be mixed."""
    path = out / PLAN
    if path.is_file():
        expected = {k: _dotted(plan, k) for k in RESUME_KEYS}
        earlier = json.loads(path.read_text())
        earlier["options"].setdefault("phash", False)  # plans written before --phash existed
        if same_model_spec(earlier["teacher"]["spec"], plan["teacher"]["spec"]):  # a plan recorded as spelt
            earlier["teacher"]["spec"] = plan["teacher"]["spec"]
        # the source is recorded as spelt (a relative path keeps the store readable where it is moved with its
        # data): another spelling of the same files is the same job
        if same_source_spec(earlier["source"]["spec"], plan["source"]["spec"]):
            earlier["source"]["spec"] = plan["source"]["spec"]
        check_manifest(earlier, expected, f"{out} (an earlier embed run; use another --out)")


def _dotted(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def embed_features(opts: EmbedOptions, out: str | Path) -> Path:
    out = Path(out)
    info = init_distributed(opts.device, opts.timeout_s)
    try:
        teacher = load_model(opts.teacher, device=str(info.device))
        source = open_source(opts.data, **source_kwargs(opts))
        units = plan_units(source, opts.shard_size)
        if not units:
            raise UserError(f"{opts.data}: the source has no samples")
        plan = _plan(opts, teacher, source, units)
        _check_resume(out, plan)
        out.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            clean_temp(out)
            atomic_write_text(out / PLAN, json.dumps(plan, indent=2))
        if info.enabled:  # also the point after which rank 0 no longer removes temp folders
            _same_teacher_everywhere(plan["teacher"]["weights_sha256"], info)
        make = _Item(teacher, opts)
        mine = [i for i in range(len(units)) if i % info.world_size == info.rank and not (out / shard_name(i)).is_dir()]
        with StageProgress("embed", len(mine), unit="shards", enabled=info.is_main) as bar, StopSignals() as stop:
            for i in mine:
                loader = _loader(source, units[i], make, opts, pin=info.device.type == "cuda")
                keys, arrays, params, skips = embed_shard(teacher, loader, opts, info.device)
                write_shard(out, i, keys, arrays if keys else _empty(opts, teacher.embed_dim), params, skips)
                bar.advance(samples=len(keys))
                if stop.signum and i != mine[-1]:  # a shard is the resume unit: stop after the one being written
                    raise stop.stop(f"after writing shard {shard_name(i)}; finished shards are kept")
        if info.enabled:
            dist.barrier()
        if info.is_main:
            _finish(out, plan)
    finally:
        shutdown(info)
    return out


def _same_teacher_everywhere(weights_hash: str, info: DistInfo) -> None:
    """Shards from different ranks must come from one teacher (a random-init SPEC differs per process)."""
    hashes = gather_rows(torch.tensor(list(weights_hash.encode()), dtype=torch.uint8), info)
    if len({bytes(h.tolist()) for h in hashes}) > 1:
        raise UserError("the ranks loaded different teacher weights (a random-init SPEC such as open_clip:ARCH "
                        "without @CHECKPOINT?): give a teacher with saved weights")


def _empty(opts: EmbedOptions, d: int) -> dict[str, np.ndarray]:
    """Zero-row arrays of every field, for a shard whose every sample was skipped."""
    shapes = {"image": (0, d), "text": (0, d), "image_tokens": (0, 0, d), "text_tokens": (0, 0, d),
              "text_mask": (0, 0), "aug_image": (0, opts.augs, d), "phash": (0,)}
    dtypes = {"text_mask": bool, "phash": np.uint64}  # the rest are float16 embeddings
    return {f: np.zeros(shapes[f], dtypes.get(f, np.float16)) for f in fields_for(opts)}


def _finish(out: Path, plan: dict) -> None:
    skips: Counter = Counter()
    count = 0
    for name in plan["shards"]:
        meta = json.loads((out / name / "meta.json").read_text())
        count += meta["count"]
        skips.update(meta["skips"])
    write_manifest(out, STAGE, **plan, counts={"samples": count, "skipped": SkipCounter(skips).total,
                                               "shards": len(plan["shards"])}, skips=dict(sorted(skips.items())))
