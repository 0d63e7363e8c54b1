"""`python faulty_cli.py FAULT clipdistill-args...`: the real CLI with one fault injected, for the kill tests.

FAULT is `NAME:N`. The process SIGKILLs itself at an exact point, so each test hits the point it names
instead of racing a timer:
- `kill-mid-step:N`   inside optimizer step N, after its backward pass, before the weights change;
- `kill-mid-epoch:N`  right after optimizer step N finished, between checkpoints, inside an epoch;
- `kill-in-ckpt:N`    while checkpoint number N is being written (weights done, `state.pt` half written);
- `kill-cell:N`       when `protocol` starts its N-th cell that still has to run;
- `sigterm-mid-step:N` (also `sigint-`, `sigusr1-`) sends that signal to itself inside optimizer step N: the
  process is expected to finish the step, checkpoint and exit 128 + signal number on its own;
- `sigterm-in-shard:N` sends SIGTERM to itself as `embed` starts writing its N-th shard.
"""

from __future__ import annotations

import os
import signal
import sys

import clipdistill  # noqa: F401  (torchvision shim first)


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def on_call(owner, name: str, n: int, before: bool = True) -> None:
    """Wrap `owner.name` so its n-th call (1-based) kills the process, before or after the original runs."""
    original, calls = getattr(owner, name), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] == n:
            die()
        out = original(*args, **kwargs)
        if not before and calls[0] == n:
            die()
        return out

    setattr(owner, name, wrapped)


def half_written_state(n: int) -> None:
    import torch

    from clipdistill.train import checkpoint

    original, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(checkpoint.STATE):
            calls[0] += 1
            if calls[0] == n:
                original(obj, f, *args, **kwargs)
                with open(f, "r+b") as fh:  # leave a torn file behind, as a kill inside write() does
                    fh.truncate(os.path.getsize(f) // 2)
                die()
        return original(obj, f, *args, **kwargs)

    checkpoint.torch.save = save


def install(fault: str) -> None:
    name, _, n = fault.partition(":")
    n = int(n)
    if name == "kill-mid-step":
        from clipdistill.train.loop import _Trainer
        on_call(_Trainer, "optimizer_step", n, before=True)
    elif name == "kill-mid-epoch":
        from clipdistill.train.loop import _Trainer
        on_call(_Trainer, "optimizer_step", n, before=False)
    elif name == "kill-in-ckpt":
        half_written_state(n)
    elif name.endswith("-mid-step") and name.startswith("sig"):
        from clipdistill.train.loop import _Trainer
        signum = getattr(signal, name.split("-")[0].upper())
        original, calls = _Trainer.optimizer_step, [0]

        def step(self):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signum)  # delivered now; the handler only records it
            return original(self)

        _Trainer.optimizer_step = step
    elif name == "sigterm-in-shard":
        from clipdistill.features import embed
        write, calls = embed.write_shard, [0]

        def signalled(*args, **kwargs):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGTERM)
            return write(*args, **kwargs)

        embed.write_shard = signalled
    elif name == "kill-cell":
        from clipdistill.td import protocol
        on_call(protocol, "run_finetune", n, before=True)
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from clipdistill.cli import main

    sys.argv = ["clipdistill", *sys.argv[2:]]
    main()
