"""`clipdistill` command line: a thin typer app; each verb lives in `clipdistill/commands/<verb>.py`."""

from __future__ import annotations

import errno
import importlib
import os
import sys

import typer

from clipdistill.errors import Interrupted, UserError
from clipdistill.progress import interval_seconds

# Order = order in --help; each module's `register(app)` adds its command(s).
COMMANDS = [
    "world", "data", "splits", "models", "embed", "balance", "distill", "vlpretrain", "eval", "finetune",
    "protocol", "report", "export", "demo",
]

app = typer.Typer(
    name="clipdistill",
    help="Distil CLIP: smaller CLIP students (CLIP-CID, CLIP-KD, TinyCLIP) and CLIP-taught VL task models (CLIP-TD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    for name in COMMANDS:
        importlib.import_module(f"clipdistill.commands.{name}").register(app)


_register_all()


def main() -> None:
    try:
        interval_seconds()  # a bad CLIPDISTILL_PROGRESS_SECONDS is refused before any stage starts writing
        app()
    except Interrupted as e:
        # a stop signal: the work stopped at a resumable point; say how to continue, exit as the signal would
        from clipdistill.runfolder import interrupted_message

        if os.environ.get("RANK", "0") == "0":
            typer.secho(interrupted_message(e), fg=typer.colors.YELLOW, err=True)
        sys.exit(128 + e.signum)
    except UserError as e:
        # bad input the user can fix: the message, not a traceback
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a full disk where no writer caught it: the resumable outputs (cells, shards, checkpoints) are written
        # whole or not at all, so the rerun picks up from them
        where = f" while writing {e.filename}" if e.filename else ""
        typer.secho(f"error: {e.strerror or e}{where}. Free space, then rerun the same command: finished cells, "
                    "shards and checkpoints are kept (distill: add --resume latest)", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
