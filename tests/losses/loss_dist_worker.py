"""Worker for test_loss_distributed: computes the losses on this rank's shard and saves values + grads."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file

import clipdistill  # noqa: F401
from clipdistill.losses import LossInputs, build_loss

BATCH, DS, DT = 4, 4, 6
CASES = {
    "clip": ({"clip": {}}, False),
    "clip_local": ({"clip": {}}, True),
    "kd": ({"crd": {}, "icl": {}, "fd": {}, "logit_kd": {}}, False),
    "kd_local": ({"crd": {}, "icl": {}, "logit_kd": {}}, True),
    "kd_gathered": ({"clip": {}, "crd": {}, "icl": {}, "logit_kd": {}}, False),
    "negclip": ({"negclip": {}}, False),
    "negclip_local": ({"negclip": {}}, True),
}
UNEVEN_CASES, UNEVEN_SPLIT = ("kd_gathered", "clip_local", "negclip"), 3


def full_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "img": torch.randn(BATCH, DS, generator=g),
        "txt": torch.randn(BATCH, DS, generator=g),
        "t_img": F.normalize(torch.randn(BATCH, DT, generator=g), dim=1),
        "t_txt": F.normalize(torch.randn(BATCH, DT, generator=g), dim=1),
        "neg": torch.randn(BATCH, DS, generator=g),
        "has_neg": torch.tensor([True, False, True, True]),  # a caption naming no attribute has no negative
    }


def step(case: str, rows: slice) -> dict[str, torch.Tensor]:
    """Loss values and gradients (features and loss parameters) for the given rows of the batch."""
    spec, local = CASES[case]
    torch.manual_seed(0)
    loss = build_loss(spec, DS, DT, local_loss=local)
    b = {k: v[rows].clone() for k, v in full_batch().items()}
    img, txt, neg = (b[k].requires_grad_(True) for k in ("img", "txt", "neg"))
    inputs = LossInputs(img, txt, torch.tensor(10.0), b["t_img"], b["t_txt"], torch.tensor(20.0))
    if "negclip" in spec:
        inputs.negative_text_features, inputs.negative_mask = neg, b["has_neg"]
    out = loss(inputs)
    out["loss"].backward()
    result = {f"value.{k}": v.detach().reshape(1) for k, v in out.items()}
    result |= {"grad.img": img.grad, "grad.txt": txt.grad}
    if neg.grad is not None:
        result["grad.neg"] = neg.grad
    result |= {f"param.{n}": p.grad for n, p in loss.named_parameters() if p.grad is not None}
    return result


def worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = BATCH // world
        for case in CASES:
            save_file(
                step(case, slice(rank * shard, (rank + 1) * shard)), f"{out_dir}/{case}.{rank}.safetensors"
            )
        for case in UNEVEN_CASES:  # a rank that lost samples to bad data: shards of 3 and 1 rows
            rows = slice(0, UNEVEN_SPLIT) if rank == 0 else slice(UNEVEN_SPLIT, BATCH)
            save_file(step(case, rows), f"{out_dir}/{case}.uneven.{rank}.safetensors")
    finally:
        dist.destroy_process_group()
