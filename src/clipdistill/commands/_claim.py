"""How the verbs that write a run folder (`distill`, `finetune`, `protocol`, `vlpretrain`, `embed`, `balance`) take
their `--out` on one process and under torchrun alike. (Not a verb: `cli.COMMANDS` does not list it.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipdistill.train.config import TrainConfig
    from clipdistill.train.distributed import DistInfo


def train_ranks(train: TrainConfig) -> DistInfo:
    """This process's place in torchrun's group for a training verb (`train.device`, `train.collective_timeout_s`)."""
    from clipdistill.train.distributed import init_distributed

    return init_distributed(train.device, train.collective_timeout_s)


@contextmanager
def claimed_out(out: Path | str, command: str, info: DistInfo, *, resume: bool = False, overwrite: bool = False,
                continues: bool = False, check: Callable[[], None] | None = None) -> Iterator[DistInfo]:
    """With the ranks joined (`info`), rank 0 alone claims `out`, runs `check` (a resume's compatibility test,
    while it holds the folder) and tells every rank the outcome (`on_main`): a refused folder ends every rank
    with rank 0's one-line error before any of them waits for it in a collective. Ranks > 0 leave the folder to
    rank 0. Yields `info`; the run's own `init_distributed` reuses the group, and it is left on the way out (a
    no-op when the run already left it)."""
    from clipdistill.runfolder import claim
    from clipdistill.train.distributed import on_main, shutdown

    def take():
        folder = claim(out, command, resume=resume, overwrite=overwrite, continues=continues)
        if check is not None:
            try:
                check()
            except BaseException:
                folder.release()
                raise
        return folder

    try:
        claimed = on_main(take, info)
        with claimed or claim(out, command, resume=resume, main=False):
            yield info
    finally:
        shutdown(info)
