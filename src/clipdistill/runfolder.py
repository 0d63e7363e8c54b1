"""The run-folder contract every command that writes a folder (`--out`) follows.

- A folder the toolkit made holds `.clipdistill-run.json` (the marker): run_id, command, created, and the
  names the command writes there. A new run refuses a non-empty folder unless it is told what to do:
  `--resume` continues the run recorded there (same command), `--overwrite` first removes ONLY the names the
  marker lists (a folder without a marker is never cleared: its files are not known to be ours).
  Commands whose rerun continues by design (`embed` shards, `protocol` cells) continue their own folder.
- `.clipdistill-run.lock` is `flock`ed for the whole run: a second writer fails at once, naming the first one's
  pid and host (advisory: every clipdistill process honours it; on NFS it needs a server with lock support).
- The run_id goes into checkpoints and manifests, so pruning and `--resume latest` only see this run's.
- A resume never loses the config the run was trained under (`record_config`): a changed one keeps the earlier
  `config.yaml` as `config.before-resume-<k>.yaml` and the manifest's `config_history` names the changed keys.
- Claiming writes the marker and the lock file, so an unwritable location fails before any work starts.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from clipdistill.config import read_yaml
from clipdistill.errors import Interrupted, UserError
from clipdistill.manifest import MANIFEST, RUN_MARKER, atomic_write_text, read_manifest

MARKER = RUN_MARKER
LOCK = ".clipdistill-run.lock"

# Top-level names each command writes into its folder (glob patterns): what `--overwrite` may remove.
WRITES: dict[str, list[str]] = {
    "distill": ["config.yaml", "config.before-resume-*.yaml", "manifest.json", "metrics.jsonl", "tb", "checkpoints",
                "model.json", "model.safetensors"],
    "finetune": ["config.yaml", "config.before-resume-*.yaml", "manifest.json", "metrics.jsonl", "tb", "checkpoints",
                 "task_model.json", "task_model.safetensors", "task_model_hf", "td_samples.json", "td_samples"],
    "balance": ["manifest.json", "keys.txt", "labels.npy", "centroids.npy", "mm_labels.npy", "mm_centroids.npy",
                "kept.npy", "kept_keys.txt", "report.json", "clusters.png"],
    "embed": ["manifest.json", "plan.json", "shard-*", ".tmp-*"],
    "protocol": ["cells", "rows.json", "results.json", "results.md", "summary.json"],
    "vlpretrain": ["config.yaml", "config.before-resume-*.yaml", "manifest.json", "metrics.jsonl", "tb", "checkpoints",
                   "tokenizer", "hf", "probes.json"],
}
TEMP_NAMES = [".*.tmp*"]  # atomic_write_text's temporary names


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    """The folder's marker, or None when there is none (a folder not made by this version of the toolkit)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable run marker ({e}); move the folder aside or give another --out") from None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        raise UserError(f"{path}: not a clipdistill run marker (no run_id); give another --out")
    return data


def run_id_of(folder: str | Path) -> str | None:
    marker = read_marker(folder)
    return marker["run_id"] if marker else None


def adopted(folder: str | Path) -> bool:
    """Whether the folder's run was adopted from before markers: its unmarked checkpoints are its own."""
    marker = read_marker(folder)
    return bool(marker and marker.get("adopted"))


def _describe(marker: dict[str, Any]) -> str:
    return f"a `{marker.get('command')}` run (run_id {marker['run_id']}, created {marker.get('created')})"


def _ours(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


class RunFolder:
    """A claimed folder: holds the lock until `release()` (or the end of the `with` block / the process)."""

    def __init__(self, path: Path, command: str, marker: dict[str, Any] | None, fd: int | None, resumed: bool):
        self.path, self.command, self.marker, self._fd, self.resumed = path, command, marker, fd, resumed

    @property
    def run_id(self) -> str | None:
        return self.marker["run_id"] if self.marker else None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _unusable(path: Path, e: OSError) -> UserError:
    return UserError(f"cannot write to {path}: {e.strerror or e} (give an --out where this user can write); "
                     "nothing was computed")


def _prepare(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a folder: give a folder (new or empty) as --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unusable(path, e) from None


def _lock(path: Path, command: str) -> int:
    """Open and flock the folder's lock file without waiting; a held lock names its holder."""
    lock = path / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise _unusable(path, e) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise _unusable(path, e) from None
        try:
            holder = json.loads(lock.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        who = (f"pid {holder.get('pid')} on host {holder.get('host')}, `{holder.get('command')}` since "
               f"{holder.get('since')}") if holder else "a process that has not written its name yet"
        raise UserError(f"{path} is in use by another clipdistill run ({who}); wait for it to end or give "
                        "another --out") from None
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
    except OSError as e:
        os.close(fd)
        raise _unusable(path, e) from None
    return fd


def claim(out: str | Path, command: str, *, resume: bool = False, overwrite: bool = False,
          continues: bool = False, main: bool = True) -> RunFolder:
    """Claim `out` for one run of `command` (see the module doc). `continues`: the command's rerun into its own
    folder continues it (embed, protocol). `main`: False on torchrun ranks > 0, which leave the folder to rank 0.
    Raises UserError before anything is written when the folder may not be used."""
    path = Path(out)
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: give one")
    if command not in WRITES:
        raise ValueError(f"no run-folder contract for command {command!r}")
    if not main:
        return RunFolder(path, command, None, None, resume)
    _prepare(path)
    if not (path / MARKER).exists():  # refuse a user's folder before putting even the lock file into it
        _refuse_foreign(path, resume or continues, overwrite, command)
    fd = _lock(path, command)
    try:
        return _claim_locked(path, command, fd, resume=resume, overwrite=overwrite, continues=continues)
    except BaseException:
        os.close(fd)
        raise


def _claim_locked(path: Path, command: str, fd: int, *, resume: bool, overwrite: bool,
                  continues: bool) -> RunFolder:
    marker = read_marker(path)
    others = sorted(p.name for p in path.iterdir() if p.name not in (LOCK, MARKER))
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    fresh = {"run_id": uuid.uuid4().hex[:16], "command": command, "created": now,
             "writes": WRITES[command] + TEMP_NAMES}
    if marker is not None and not others:  # a claim that wrote nothing (e.g. a run refused at its inputs)
        marker = None
    if marker is None:
        _refuse_foreign(path, resume or continues, overwrite, command)
        resumed = bool(others)
        if resumed:  # a run folder from before markers: its checkpoints (no run_id) count as this run's
            fresh["adopted"] = now
        marker = fresh
    elif overwrite:
        _clear(path, marker)
        marker, resumed = fresh, False
    elif marker.get("command") != command:
        raise UserError(f"--out {path} holds {_describe(marker)}, not a `{command}` run: give another --out "
                        "(or --overwrite to replace it)")
    elif resume or continues:
        # the marker is not rewritten: a resume that a later check refuses (another architecture) changes nothing
        return RunFolder(path, command, marker, fd, True)
    else:
        hint = "--resume latest to continue it, " if command in RESUME_FLAG else ""
        raise UserError(f"--out {path} already holds {_describe(marker)}: {hint}--overwrite to replace it, or "
                        "give another --out")
    try:
        _write_json(path / MARKER, marker)
    except OSError as e:
        raise _unusable(path, e) from None
    return RunFolder(path, command, marker, fd, resumed)


def _refuse_foreign(path: Path, resume: bool, overwrite: bool, command: str) -> None:
    """A folder without a marker is used only when empty (or, to continue it, a run folder from before
    markers)."""
    others = sorted(p.name for p in path.iterdir() if p.name not in (LOCK, MARKER))
    if others and not (resume and _legacy_run(path, command)):
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        how = "--overwrite only clears folders clipdistill made" if overwrite else "it was not made by clipdistill"
        raise UserError(f"--out {path} is not empty ({shown}) and {how}: nothing was changed. Give a new or empty "
                        "folder")


def _legacy_run(path: Path, command: str) -> bool:
    """A folder from before markers: its manifest names the same stage (an unfinished store: its plan; a
    protocol sweep: its cells)."""
    if command == "embed" and (path / "plan.json").is_file():
        return True
    if command == "protocol":
        return (path / "cells").is_dir()
    try:
        return json.loads((path / "manifest.json").read_text()).get("stage") == command
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _clear(path: Path, marker: dict[str, Any]) -> None:
    """Remove the names the marker lists (what the toolkit wrote); anything else in the folder stays."""
    patterns = [p for p in marker.get("writes", []) if isinstance(p, str)]
    patterns += WRITES.get(str(marker.get("command")), [])  # names this version adds for that command
    for entry in path.iterdir():
        if entry.name in (LOCK, MARKER) or not _ours(entry.name, patterns):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_writable_file(path: str | Path, what: str = "--output") -> Path:
    """Before computing a result file: its folder can be made and written, and the path is not a folder.
    Probes with a hidden file that is removed at once."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder: give a file path (e.g. {path / 'result.json'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write {what} {path}: {e.strerror or e}; nothing was computed") from None
    return path


CONFIG = "config.yaml"
KEPT_CONFIG = "config.before-resume-{k}.yaml"  # the config a run had before the k-th resume that changed it
SHOWN_KEYS = 8  # changed keys named in the warning line; the manifest lists them all


def record_config(cfg: BaseModel, folder: str | Path, *, resumed: bool) -> list[dict[str, Any]]:
    """Write the run's resolved `config.yaml` without losing the one a resumed run was trained under.

    Not resumed (or no config.yaml yet): written. Resumed with the same config (compared as validated values,
    not bytes): left untouched. Resumed with a changed one: the earlier file is kept as
    `config.before-resume-<k>.yaml` (the first free k, never overwritten), the new one written, one warning line
    names the changed keys, and `{file, changed, at}` is added to the run's config history.
    Returns that history (the earlier manifest's `config_history` + this resume's entry; [] for a fresh run):
    the caller puts it into the manifest it writes. Rank 0 only."""
    folder = Path(folder)
    path = folder / CONFIG
    history = _config_history(folder) if resumed else []
    if not (resumed and path.is_file()):
        _write_config(cfg, path)
        return history
    changed = changed_config_keys(cfg, path)
    if not changed:
        return history
    k = 1
    while (folder / KEPT_CONFIG.format(k=k)).exists():
        k += 1
    kept = folder / KEPT_CONFIG.format(k=k)
    with open(kept, "xb") as f:  # exclusive create: an existing file is never replaced
        f.write(path.read_bytes())
        f.flush()
        os.fsync(f.fileno())
    _write_config(cfg, path)
    shown = ", ".join(changed[:SHOWN_KEYS]) + (f" and {len(changed) - SHOWN_KEYS} more"
                                              if len(changed) > SHOWN_KEYS else "")
    print(f"warning: resumed with a config that differs from the run's in {shown}; the earlier one is kept as "
          f"{kept} and the change recorded in {folder / MANIFEST} (config_history)", file=sys.stderr, flush=True)
    return [*history, {"file": kept.name, "changed": changed, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}]


def _write_config(cfg: BaseModel, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def history_fields(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest fields for `record_config`'s history: none for a run whose config never changed."""
    return {"config_history": history} if history else {}


def changed_config_keys(cfg: BaseModel, path: Path) -> list[str]:
    """Dotted paths where `cfg` differs from the config recorded at `path`. The recorded one is validated by
    the same class first, so defaults added since and old spellings compare by value; one this version no longer
    accepts is compared as written."""
    try:
        old: Any = read_yaml(path)
    except UserError:  # an unreadable config.yaml is still kept, as a wholly changed one
        return ["(the earlier config.yaml could not be read)"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an old spelling's FutureWarning was shown when the run started
            old = type(cfg).model_validate(old).model_dump(mode="json")
    except (ValidationError, UserError):
        pass
    new = cfg.model_dump(mode="json")
    if isinstance(old, dict):  # `out` names the folder being resumed: another spelling of it is no change
        old, new = ({k: v for k, v in d.items() if k != "out"} for d in (old, new))
    return _diff(old, new)


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix.rstrip(".") or "(whole config)"]
    keys = [*new, *(k for k in old if k not in new)]
    return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}{k}.")] if old != new else []


def _config_history(folder: Path) -> list[dict[str, Any]]:
    """The manifest's `config_history` (earlier resumes that changed the config); [] when there is none."""
    try:
        data = read_manifest(folder)
    except (UserError, OSError):  # none, or corrupt: no history to carry
        return []
    history = data.get("config_history") if isinstance(data, dict) else None
    return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []


def resume_command(argv: list[str] | None = None, *, flag: bool = True) -> str:
    """The command line that continues this run: this process's arguments with `--resume latest` (when the
    command takes `--resume`) in place of any `--resume X` / `--overwrite`."""
    args = list(sys.argv if argv is None else argv)[1:]
    kept: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--resume":
            skip = True
            continue
        if a.startswith("--resume=") or a == "--overwrite":
            continue
        kept.append(a)
    return shlex.join(["clipdistill", *kept, *(["--resume", "latest"] if flag else [])])


# SIGTERM: SLURM / Kubernetes before a kill; SIGINT: Ctrl-C; SIGUSR1: SLURM's `--signal=B:USR1@90` choice
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
RESUME_FLAG = {"distill", "finetune", "vlpretrain"}  # commands continued with --resume; the others by rerunning them


class StopSignals:
    """While active (a `with` block in the main thread), a stop signal only sets `signum`: the work stops at
    its next resumable point (an optimizer step, a shard, a cell) and raises `Interrupted`. A second signal
    ends the process at once, as it would without the handler."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        print(f"received {signal.Signals(signum).name}: stopping at the next resumable point (send it again to "
              "stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
            outer = getattr(old, "__self__", None)
            if isinstance(outer, StopSignals) and self.signum and not outer.signum:
                outer.signum = self.signum  # nested (a protocol cell's fit): a signal the inner work did not act on
        self._old.clear()

    def stop(self, where: str) -> Interrupted:
        """The exception to raise once the work has reached a resumable point."""
        assert self.signum is not None
        return Interrupted(self.signum, f"stopped by {signal.Signals(self.signum).name} {where}")


def interrupted_message(e: Interrupted, argv: list[str] | None = None) -> str:
    """The exception's message and the exact command that continues the run."""
    args = list(sys.argv if argv is None else argv)
    verb = args[1] if len(args) > 1 else ""
    how = resume_command(args, flag=verb in RESUME_FLAG)
    return (f"{e}. Continue with: {how}"
            + (" (under torchrun: the same launcher line with these arguments)"
               if os.environ.get("WORLD_SIZE", "1") != "1" else ""))
