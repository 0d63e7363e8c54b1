"""`clipdistill` command line: a thin typer app; each verb lives in `clipdistill/commands/<verb>.py`."""

from __future__ import annotations

import atexit
import errno
import gc
import importlib
import io
import os
import sys
import threading
from typing import NoReturn

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


def run() -> NoReturn:
    """The `clipdistill` command and `python -m clipdistill`: `main`, then the process ends without the
    interpreter's teardown. With torch, open_clip and transformers loaded, clearing ~2,700 modules and finalising
    their objects takes ~1 s after the last output is written (open_clip's own import exits the same way slowly);
    a 20 s training command spends 5% of its time there. Only what that teardown would have written is kept:
    non-daemon threads are joined, unreachable objects collected (a file left unclosed is flushed by its
    finaliser), every open file object that is still reachable flushed, atexit handlers run (logging,
    multiprocessing's worker shutdown, coverage), stdio flushed. A traceback still takes the ordinary path.
    In-process callers (tests, notebooks) call `main`, which raises SystemExit as usual."""
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    exit_now(code)


_FILE_TYPES = {io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom, io.FileIO}


def exit_now(code: object) -> NoReturn:
    """`sys.exit(code)`'s outcome (None = 0, an int as is, anything else printed to stderr with status 1),
    ended with os._exit once nothing is left to write (see `run`)."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    main_thread = threading.main_thread()
    for t in threading.enumerate():
        if t is not main_thread and not t.daemon:
            t.join()
    gc.collect()
    for obj in gc.get_objects():
        # exact types: an isinstance test through io.IOBase's ABC machinery costs ~0.1 s over 400k objects
        if type(obj) in _FILE_TYPES:
            try:
                if not obj.closed:
                    obj.flush()
            except (OSError, ValueError):  # a pipe closed by the reader, a detached buffer
                pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    run()
