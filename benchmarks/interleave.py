"""Timing helpers shared by the side-by-side benchmarks (bench_distill, bench_td)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def task_step(task, opt, batch) -> None:
    """One optimizer step of a task object (`training_step(batch)["loss"]`, as the shared loop runs it)."""
    loss = task.training_step(batch)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def interleaved_medians(variants: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per variant, after one warm-up call each; the variants run round by round, so drift on a
    shared machine hits all of them alike."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}
