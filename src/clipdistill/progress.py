"""Progress of long stages: rich's bar on a terminal, plain flushed lines everywhere else.

A log file, CI or SLURM never sees a rich bar (it draws only on a TTY), so without these lines a redirected run
(`make demo > demo.log`) is silent for minutes. When stdout is not a terminal a stage prints

    progress: train 120/400 steps, 35.2 samples/s, ETA 0:02:13

at its start, then at most every CLIPDISTILL_PROGRESS_SECONDS seconds (default 30; 0 = every update), then at
its end. Imports only rich: `--help` stays instant.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from clipdistill.errors import UserError

ENV = "CLIPDISTILL_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0
T = TypeVar("T")


def interval_seconds() -> float:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also catches nan
        raise UserError(f"{ENV}={raw!r}: expected a number of seconds >= 0 (0 = a line at every update)")
    return value


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class StageProgress:
    """`done/total unit`, samples/s and ETA of one stage.

    update(done=..., samples=...) sets the absolute position (and adds processed samples); advance(n) adds n.
    `total` may be None (a stream of unknown length): the line then has no ETA. `enabled=False` (non-main DDP
    ranks, a caller's progress=False) makes every call a no-op. `stream`: where plain lines go (default stdout);
    `tty`: force the bar (True) or plain lines (False) instead of asking the stream.
    """

    def __init__(self, stage: str, total: int | None, *, start: int = 0, unit: str = "steps", enabled: bool = True,
                 transient: bool = False, stream=None, tty: bool | None = None):
        self.stage, self.total, self.unit, self.enabled = stage, total, unit, enabled
        self.done = self.start = start
        self.samples = 0
        self.rate: float | None = None
        self.info = ""
        self.stream = stream
        self._bar = None
        self._closed = False
        if not enabled:
            return
        out = stream if stream is not None else sys.stdout
        if tty if tty is not None else (hasattr(out, "isatty") and out.isatty()):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn(f"[bold]{stage}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=transient)
            self._task = self._bar.add_task(stage, total=total, completed=start, info="")
            self._bar.start()
            return
        self.every = interval_seconds()
        self.t0 = self._last_print = time.monotonic()
        self._last_samples, self._last_time = 0, self.t0
        self._line("start")

    # -- updates
    def update(self, done: int | None = None, *, samples: int = 0, info: dict[str, float] | str | None = None,
               rate: float | None = None) -> None:
        """`rate`: samples/s measured by the caller (the training loop times its steps), shown instead of ours."""
        if not self.enabled or self._closed:
            return
        if done is not None:
            self.done = done
        self.samples += samples
        if rate is not None:
            self.rate = rate
        if info is not None:
            self.info = info if isinstance(info, str) else " ".join(f"{k}={v:.4g}" for k, v in info.items())
        if self._bar is not None:
            extra = "" if self.rate is None else f" {self.rate:.1f} samples/s"
            self._bar.update(self._task, completed=self.done, info=self.info + extra)
            return
        now = time.monotonic()
        if now - self._last_print >= self.every:
            self._line()

    def advance(self, n: int = 1, *, samples: int = 0, info: dict[str, float] | str | None = None) -> None:
        self.update(self.done + n, samples=samples, info=info)

    def close(self) -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.stop()
        else:
            self._line("done")

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plain lines
    def line(self, tag: str = "") -> str:
        """The plain progress line as it would be printed now."""
        now = time.monotonic()
        elapsed = now - self.t0
        total = "?" if self.total is None else str(self.total)
        parts = [f"progress: {self.stage} {self.done}/{total} {self.unit}"]
        span = now - self._last_time
        if self.rate is not None:
            parts.append(f"{self.rate:.1f} samples/s")
        elif tag == "done" and self.samples and elapsed > 0:
            parts.append(f"{self.samples / elapsed:.1f} samples/s")
        elif self.samples and span > 0:
            parts.append(f"{(self.samples - self._last_samples) / span:.1f} samples/s")  # since the last line
        if tag == "done":
            parts.append(f"took {_clock(elapsed)}")
        elif self.total is not None:
            moved = self.done - self.start
            eta = (self.total - self.done) * elapsed / moved if moved > 0 else None
            parts.append("ETA " + ("?" if eta is None else _clock(eta)))
        if self.info:
            parts.append(self.info)
        return ", ".join(parts)

    def _line(self, tag: str = "") -> None:
        text = self.line(tag)
        now = time.monotonic()
        self._last_print = now
        if self.samples:
            self._last_samples, self._last_time = self.samples, now
        out = self.stream if self.stream is not None else sys.stdout  # looked up late: pytest swaps sys.stdout
        print(text, file=out, flush=True)


def track(items: Iterable[T], stage: str, *, total: int | None = None, unit: str = "items",
          enabled: bool = True, transient: bool = False) -> Iterator[T]:
    """Iterate `items`, one progress unit (and one sample, for the rate) per item: rich.progress.track's role,
    with the plain lines."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with StageProgress(stage, total, unit=unit, enabled=enabled, transient=transient) as p:
        for item in items:
            yield item
            p.advance(samples=1)
