"""Worker for test_loss_siglip: on this rank's shard, our `siglip` term and open_clip's `SigLipLoss` (values and
gradients of features, scale and bias), for each `dist_impl`; and ours alone on uneven shards."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file

import clipdistill  # noqa: F401
from clipdistill.losses import LossInputs, build_loss

BATCH, DIM = 6, 5
IMPLS = ("bidir", "shift", "gather")
UNEVEN = {2: (4, 2), 3: (3, 1, 2)}  # rows per rank when ranks lost samples to bad data


def full_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return {"img": torch.randn(BATCH, DIM, generator=g), "txt": torch.randn(BATCH, DIM, generator=g),
            "scale": torch.tensor(7.0), "bias": torch.tensor(-2.0)}


def leaves(rows: slice) -> dict[str, torch.Tensor]:
    return {k: (v[rows] if v.ndim else v).clone().requires_grad_(True) for k, v in full_batch().items()}


def grads(value: torch.Tensor, x: dict[str, torch.Tensor], tag: str) -> dict[str, torch.Tensor]:
    value.backward()
    return {f"{tag}.value": value.detach().reshape(1)} | {f"{tag}.grad.{k}": v.grad for k, v in x.items()}


def ours(impl: str, rows: slice) -> dict[str, torch.Tensor]:
    x = leaves(rows)
    loss = build_loss({"siglip": {"dist_impl": impl}}, DIM, student_bias=True)
    out = loss(LossInputs(x["img"], x["txt"], x["scale"], logit_bias=x["bias"]))
    return grads(out["siglip"], x, f"ours.{impl}")


def open_clip_loss(impl: str, rows: slice, rank: int, world: int) -> dict[str, torch.Tensor]:
    from open_clip.loss import SigLipLoss

    x = leaves(rows)
    ref = SigLipLoss(rank=rank, world_size=world, dist_impl=impl)
    value = ref(F.normalize(x["img"], dim=-1), F.normalize(x["txt"], dim=-1), x["scale"], x["bias"])
    return grads(value, x, f"open_clip.{impl}")


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = BATCH // world
        even = slice(rank * shard, (rank + 1) * shard)
        start = sum(UNEVEN[world][:rank])
        uneven = slice(start, start + UNEVEN[world][rank])
        result: dict[str, torch.Tensor] = {}
        for impl in IMPLS:
            result |= ours(impl, even) | open_clip_loss(impl, even, rank, world)
            result |= {f"uneven.{k}": v for k, v in ours(impl, uneven).items()}
        save_file(result, f"{out_dir}/siglip.{world}.{rank}.safetensors")
    finally:
        dist.destroy_process_group()
