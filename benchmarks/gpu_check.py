"""What a lent GPU machine must show, in one go (run by benchmarks/gpu_check.sh):

    amp_bf16, amp_fp16   a few optimizer steps of `fit` (the real loop: autocast, GradScaler for fp16,
                         checkpoint at the end) with a cached-teacher distill task; loss finite, checkpoint written
    ddp_nccl             a 1-process DDP group on the nccl backend: all_reduce, and DDP steps of the student
    faiss_gpu            faiss GPU k-means + search when a GPU faiss is installed (faiss-cpu: reported, not failed)
    throughput_mfu       a ViT-B/16-shaped student (open_clip ViT-B-16) with a cached 768-d teacher, CLIP-KD's
                         losses, bf16 autocast: samples/s, and model FLOP utilisation = counted step FLOPs / s
                         over the measured bf16 matmul peak (and over the datasheet peak when the GPU is known)

Writes `OUT/gpu_check.json` and `OUT/gpu_check.md` (a table RESULTS.md can quote). Exits 2 with "no GPU" when
CUDA is not available, unless `--cpu-dry-run`: then every check runs on CPU at toy sizes (bf16 autocast on
CPU, gloo instead of nccl) to prove the script itself works, and the report says the figures are not GPU
figures. Exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

import clipdistill  # noqa: F401  (torchvision shim before open_clip)
from clipdistill.distill.batch import DistillBatch, TeacherMode, View
from clipdistill.distill.task import DistillTask
from clipdistill.features import CachedFeatures
from clipdistill.losses import build_loss
from clipdistill.train import TrainConfig, fit
from clipdistill.train.optim import build_optimizer
from clipdistill.zoo import load_model

KD = {"clip": {}, "crd": {}, "fd": {"weight": 2000}, "icl": {}}
# dense bf16 tensor-core peak from the vendors' datasheets (FLOP/s), SXM parts
DATASHEET_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}


class Sizes:
    def __init__(self, dry: bool):
        self.student = "open_clip:cd-student-xs-32" if dry else "open_clip:ViT-B-16"
        self.teacher_dim = 64 if dry else 768
        self.batch = 8 if dry else 256
        self.fit_steps = 2 if dry else 20
        self.timed_steps = 2 if dry else 30
        self.matmul_n = 512 if dry else 8192


def cached_batch(model, teacher_dim: int, batch: int, device: torch.device) -> DistillBatch:
    g = torch.Generator().manual_seed(0)
    view = View(torch.randn(batch, 3, model.image_size, model.image_size, generator=g),
                torch.randint(1, 1000, (batch, model.context_length), generator=g))
    cached = CachedFeatures(F.normalize(torch.randn(batch, teacher_dim, generator=g), dim=-1),
                            F.normalize(torch.randn(batch, teacher_dim, generator=g), dim=-1), torch.tensor(100.0))
    return DistillBatch([str(i) for i in range(batch)], torch.arange(batch), view, TeacherMode.CACHED,
                        cached=cached).to(device)


def make_task(sizes: Sizes) -> DistillTask:
    torch.manual_seed(0)
    student = load_model(sizes.student)
    return DistillTask(student, build_loss(KD, student.embed_dim, sizes.teacher_dim))


def check_amp(precision: str, sizes: Sizes, dry: bool) -> dict:
    task = make_task(sizes)
    batch = cached_batch(task.student, sizes.teacher_dim, sizes.batch, torch.device("cpu"))
    device = "cpu" if dry else "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        # on CPU the loop stays fp32 whatever `precision` says: the dry run proves the loop path, and the
        # autocast step below proves the dtype path
        cfg = TrainConfig(steps=sizes.fit_steps, lr=1e-4, warmup=0.1, precision=precision, device=device,
                          log_every=1, save_every=10**6, progress=False, tensorboard=False, grad_clip=1.0)
        t0 = time.perf_counter()
        fit(task, lambda epoch: [batch] * sizes.fit_steps, cfg, tmp)
        seconds = time.perf_counter() - t0
        records = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in records if "loss" in r]
        ckpt = any((Path(tmp) / "checkpoints").iterdir())
    if dry:
        with torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16" else torch.float16):
            out = task.training_step(batch)
        out["loss"].backward()
        losses.append(float(out["loss"].detach()))
    finite = bool(losses) and all(torch.isfinite(torch.tensor(losses)).tolist())
    return {"ok": finite and ckpt and len(losses) >= sizes.fit_steps, "losses": losses[:3] + losses[-2:],
            "checkpoint": ckpt, "fit_seconds": seconds}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(sizes: Sizes, dry: bool) -> dict:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend, device = ("gloo", torch.device("cpu")) if dry else ("nccl", torch.device("cuda", 0))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        t = torch.full((4,), 3.0, device=device)
        dist.all_reduce(t)
        reduced = t.tolist() == [3.0] * 4
        task = make_task(sizes)
        student = task.student.to(device).train()
        ddp = DistributedDataParallel(student, device_ids=None if dry else [0])
        opt = build_optimizer({"student": student}, TrainConfig(lr=1e-4))
        batch = cached_batch(student, sizes.teacher_dim, sizes.batch, device)
        losses = []
        for _ in range(2):
            out = ddp(batch.student.image, batch.student.text)
            img, txt = F.normalize(out["image_features"], dim=-1), F.normalize(out["text_features"], dim=-1)
            logits = out["logit_scale"] * img @ txt.T
            labels = torch.arange(len(logits), device=device)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
    finally:
        dist.destroy_process_group()
    return {"ok": reduced and all(map(torch.isfinite, torch.tensor(losses))), "backend": backend,
            "all_reduce": reduced, "losses": losses}


def check_faiss(dry: bool) -> dict:
    try:
        import faiss
        import numpy as np
    except ImportError:
        return {"ok": None, "note": "faiss not installed"}
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0:
        return {"ok": None, "note": f"faiss {faiss.__version__} has no GPU support (faiss-cpu): not checked"}
    x = np.random.default_rng(0).standard_normal((20_000, 128)).astype("float32")
    t0 = time.perf_counter()
    km = faiss.Kmeans(128, 256, niter=10, gpu=True, seed=0)
    km.train(x)
    _, labels = km.index.search(x, 1)
    return {"ok": bool((labels >= 0).all()), "gpus": gpus, "kmeans_seconds": time.perf_counter() - t0}


def matmul_peak(n: int, device: torch.device, dtype: torch.dtype) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_throughput(sizes: Sizes, dry: bool) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cpu" if dry else "cuda")
    task = make_task(sizes)
    task.student.to(device).train()
    task.loss.to(device).train()
    opt = build_optimizer(task.trainable(), TrainConfig(lr=1e-4))
    batch = cached_batch(task.student, sizes.teacher_dim, sizes.batch, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = task.training_step(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(sizes.timed_steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / sizes.timed_steps
    peak = matmul_peak(sizes.matmul_n, device, torch.bfloat16)
    res = {"ok": True, "student": sizes.student, "batch": sizes.batch, "step_seconds": seconds,
           "samples_per_s": sizes.batch / seconds, "step_flops": flops, "achieved_flops": flops / seconds,
           "bf16_matmul_peak": peak, "mfu_of_measured_peak": flops / seconds / peak}
    if not dry:
        name = torch.cuda.get_device_name(0)
        res["device_name"] = name
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        spec = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
        if spec:
            res["mfu_of_datasheet_peak"] = flops / seconds / spec
    return res


def markdown(report: dict) -> str:
    lines = [f"gpu_check ({report['mode']}, {report['device']}, torch {report['torch']}, {report['date']})", "",
             "| check | ok | figures |", "| --- | --- | --- |"]
    for name, r in report["checks"].items():
        ok = "-" if r.get("ok") is None else ("yes" if r["ok"] else "**NO**")
        figs = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                         if k not in ("ok", "losses", "traceback"))
        lines.append(f"| {name} | {ok} | {figs} |")
    if report["mode"] != "gpu":
        lines += ["", "CPU dry run at toy sizes: these are not GPU figures; the script ran end to end."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-dry-run", action="store_true", help="toy sizes on CPU; proves the script, not the GPU")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out"))
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["amp_bf16", "amp_fp16", "ddp_nccl", "faiss_gpu", "throughput_mfu"])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dry = args.cpu_dry_run
    report = {"mode": "cpu-dry-run" if dry else "gpu", "torch": torch.__version__, "cuda": torch.version.cuda,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "checks": {}}
    if not dry and not torch.cuda.is_available():
        report.update(device="none", status="no GPU")
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        print(f"no GPU: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda}); nothing checked. Use --cpu-dry-run to test the script itself.")
        return 2
    report["device"] = "cpu" if dry else torch.cuda.get_device_name(0)
    if dry:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    sizes = Sizes(dry)
    checks = {"amp_bf16": lambda: check_amp("bf16", sizes, dry), "amp_fp16": lambda: check_amp("fp16", sizes, dry),
              "ddp_nccl": lambda: check_ddp(sizes, dry), "faiss_gpu": lambda: check_faiss(dry),
              "throughput_mfu": lambda: check_throughput(sizes, dry)}
    for name, fn in checks.items():
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            report["checks"][name] = fn()
        except Exception as e:  # one failing check must not hide the others' figures
            report["checks"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300],
                                      "traceback": traceback.format_exc()[-2000:]}
        report["checks"][name]["wall_s"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: {json.dumps({k: v for k, v in report['checks'][name].items() if k != 'traceback'})}",
              flush=True)
    failed = [k for k, r in report["checks"].items() if r.get("ok") is False]
    report["status"] = "failed: " + ", ".join(failed) if failed else "ok"
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
