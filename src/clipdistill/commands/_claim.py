"""How the training verbs (`distill`, `finetune`, `protocol`, `vlpretrain`) take their `--out` on one process and
under torchrun alike. (Not a verb: `cli.COMMANDS` does not list it.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipdistill.train.config import TrainConfig
    from clipdistill.train.distributed import DistInfo


@contextmanager
def claimed_out(out: Path | str, command: str, train: TrainConfig, *, resume: bool = False, overwrite: bool = False,
                continues: bool = False, check: Callable[[], None] | None = None) -> Iterator[DistInfo]:
    """Join torchrun's ranks first (`train.device`, `train.collective_timeout_s`), then let rank 0 alone claim
    `out` and run `check` (a resume's compatibility test, while it holds the folder) and tell every rank the
    outcome (`on_main`): a refused folder ends every rank with rank 0's one-line error before any of them waits
    for it in a collective. Ranks > 0 leave the folder to rank 0. Yields the ranks' DistInfo; the run's own
    `init_distributed` reuses the group, and it is left on the way out (a no-op when the run already left it)."""
    from clipdistill.runfolder import claim
    from clipdistill.train.distributed import init_distributed, on_main, shutdown

    def take():
        folder = claim(out, command, resume=resume, overwrite=overwrite, continues=continues)
        if check is not None:
            try:
                check()
            except BaseException:
                folder.release()
                raise
        return folder

    info = init_distributed(train.device, train.collective_timeout_s)
    try:
        claimed = on_main(take, info)
        with claimed or claim(out, command, resume=resume, main=False):
            yield info
    finally:
        shutdown(info)
