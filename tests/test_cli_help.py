"""`--help` is instant (no torch / open_clip / transformers at registration) and every example it shows runs against
a tiny world: each parses, names only paths the world or an earlier example makes, and the cheap ones are run.

The examples form one session, in ORDER, in a folder holding `configs/` (the repository root as a user has it):
`clipdistill world --out world_tiny ...` first, then the stages that read what it and the earlier ones wrote.
CLIPDISTILL_RUN_HELP_EXAMPLES=1 also runs the slow ones (embed ... export; minutes on a shared CPU).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clipdistill.cli import app

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "open_clip", "transformers", "torchvision", "faiss", "matplotlib", "timm")
ORDER = ["world", "data inspect", "splits", "models list", "models info", "models download", "embed", "balance",
         "distill", "vlpretrain", "eval zeroshot", "eval retrieval", "eval linear-probe", "eval build", "finetune",
         "protocol", "report", "export", "demo"]
RUN_ALWAYS = {"world", "data inspect", "splits", "models list", "models info"}  # seconds each
NEVER_RUN = {"models download": "downloads weights (no network in tests)",
             "demo": "the small demo takes ~11 min (tests/test_demo.py runs --size tiny)"}
OUTPUTS = {"out", "output"}
SPEC = re.compile(r"^(world|run|imagefolder|images|hf):(.+)$")
CONFIGS = {"distill": ("clipdistill.distill.config", "DistillConfig"),
           "vlpretrain": ("clipdistill.vlpretrain.config", "VLPretrainConfig"),
           "finetune": ("clipdistill.td.runner", "FinetuneConfig"),
           "protocol": ("clipdistill.td.protocol", "ProtocolConfig")}


def commands(cmd, path=()):
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def examples_of(text: str) -> list[str]:
    """`Example: clipdistill ...` (or `Example (...):` then the command on the next line), `\\` continued."""
    lines, out = (text or "").splitlines(), []
    for i, line in enumerate(lines):
        if not line.strip().startswith("Example"):
            continue
        cmd = line.split(":", 1)[1].strip()
        j = i
        if not cmd.startswith("clipdistill ") and j + 1 < len(lines):
            j += 1
            cmd = lines[j].strip()
        assert cmd.startswith("clipdistill "), f"an example that is not a command: {line!r}"
        while cmd.endswith("\\"):
            j += 1
            cmd = cmd[:-1].rstrip() + " " + lines[j].strip()
        out.append(cmd)
    return out


def all_examples() -> list[tuple[str, list[str], object]]:
    """(verb, argv after `clipdistill`, click command) of every help example, in ORDER."""
    root = typer.main.get_command(app)
    found = [(verb, shlex.split(ex)[1:], cmd) for verb, cmd in commands(root) for ex in examples_of(cmd.help)]
    unplaced = {v for v, _, _ in found} - set(ORDER)
    assert not unplaced, f"place the examples of {unplaced} in ORDER (after the examples that make their inputs)"
    return sorted(found, key=lambda f: ORDER.index(f[0]))


def test_import_and_help_do_not_load_heavy_libraries():
    code = ("import sys, typer, clipdistill.cli as c\n"
            "root = typer.main.get_command(c.app)\n"
            "def walk(cmd, path):\n"
            "    if hasattr(cmd, 'commands'):\n"
            "        for n, s in cmd.commands.items():\n"
            "            walk(s, path + [n])\n"
            "    else:\n"
            "        cmd.get_help(cmd.make_context(' '.join(path), ['--help'], resilient_parsing=True))\n"
            "walk(root, ['clipdistill'])\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-400:]
    assert out.stdout.count("Usage: clipdistill") >= len(ORDER) - 2  # every verb's help was rendered


def test_package_import_is_light_and_the_shim_still_precedes_torchvision():
    """`import clipdistill` no longer imports torch; the torchvision shim is applied by the finder it installs, at
    the first torchvision import (directly here, with no torch imported before it)."""
    code = ("import sys, clipdistill\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
            "import torchvision.transforms, torch\n"
            "print(clipdistill._tv_compat.APPLIED == (torch.version.cuda is None))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"], out.stdout


def test_help_of_every_verb_exits_zero_without_heavy_imports():
    # the command ends with os._exit (cli.run): atexit handlers still run, so one reports what was imported
    code = ("import atexit, runpy, sys\n"
            "sys.argv = ['clipdistill'] + sys.argv[1:]\n"
            f"atexit.register(lambda: print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules]))\n"
            "runpy.run_module('clipdistill', run_name='__main__')\n")
    for verb in ("embed", "eval zeroshot", "distill"):
        out = subprocess.run([sys.executable, "-c", code, *verb.split(), "--help"], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        assert "Example" in out.stdout and "HEAVY []" in out.stdout, out.stdout[-400:]


def test_eval_default_output_is_the_evaluation_default():
    from clipdistill.commands.eval import DEFAULT_OUTPUT
    from clipdistill.evaluation.results import DEFAULT_OUTPUT as REAL

    assert DEFAULT_OUTPUT == REAL


def _inputs(verb: str, params: dict) -> tuple[list[str], list[str]]:
    """(paths the example reads, paths it writes) from its parsed parameters."""
    reads, writes = [], []
    for name, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v is None or isinstance(v, bool | int | float):
                continue
            v = str(v)
            if name in OUTPUTS:
                writes.append(v)
            elif name in ("set_", "overrides"):  # --set key=value
                key, _, val = v.partition("=")
                if key == "out":
                    writes.append(val)
                elif key in ("world", "data.source", "teacher.features", "data.keep", "task.folder"):
                    reads.append(SPEC.sub(r"\2", val))
            elif (m := SPEC.match(v)) is not None:
                reads.append(m[2])
            elif v.startswith("open_clip:"):
                ckpt = v.partition("@")[2]
                if "/" in ckpt or Path(ckpt).suffix:  # a checkpoint file, not a pretrained tag
                    reads.append(ckpt)
            elif "/" in v or Path(v).suffix in (".yaml", ".csv", ".jsonl", ".tar", ".json") or name in (
                    "features", "data", "train", "results", "inputs", "config"):
                reads.append(v)
    return reads, writes


def _made(path: str, produced: list[str]) -> bool:
    p = Path(path)
    return p.exists() or any(p == Path(w) or Path(w) in p.parents or p in Path(w).parents for w in produced)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("help_examples")
    (root / "configs").symlink_to(REPO / "configs")
    return root


def test_every_example_parses_names_existing_paths_and_the_quick_ones_run(session, monkeypatch):
    monkeypatch.chdir(session)
    runner, produced, seen = CliRunner(), [], set()
    for verb, argv, cmd in all_examples():
        seen.add(verb)
        ctx = cmd.make_context(f"clipdistill {verb}", argv[len(verb.split()):])  # raises on a bad option/value
        reads, writes = _inputs(verb, ctx.params)
        for path in reads:
            assert _made(path, produced), f"`clipdistill {shlex.join(argv)}` reads {path}, which neither the tiny " \
                                          "world nor an earlier example makes"
        if verb in CONFIGS:  # the --set keys exist and their values are valid
            import importlib

            from clipdistill.config import load_config

            module, cls = CONFIGS[verb]
            load_config(getattr(importlib.import_module(module), cls), ctx.params["config"],
                        list(ctx.params.get("set_") or ctx.params.get("overrides") or []))
        if verb in RUN_ALWAYS:
            r = runner.invoke(app, argv)
            assert r.exit_code == 0, f"clipdistill {shlex.join(argv)}\n{r.output}"
        produced += writes
    assert {"world", "embed", "distill", "eval zeroshot", "report"} <= seen
    assert (session / "world_tiny" / "world.json").is_file()


@pytest.mark.skipif(os.environ.get("CLIPDISTILL_RUN_HELP_EXAMPLES") != "1",
                    reason="minutes of training on a shared CPU; set CLIPDISTILL_RUN_HELP_EXAMPLES=1 to run")
def test_every_example_runs(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    log = []
    for verb, argv, _ in all_examples():
        if verb in NEVER_RUN:
            continue
        out = subprocess.run([sys.executable, "-m", "clipdistill", *argv], capture_output=True, text=True,
                             cwd=tmp_path, timeout=3600)
        log.append({"verb": verb, "rc": out.returncode})
        assert out.returncode == 0, f"clipdistill {shlex.join(argv)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    assert (tmp_path / "report" / "report.html").is_file(), json.dumps(log)


# verbs that write a folder take it as --out (finetune / protocol also read a config's `out:` when it is absent);
# eval's verbs write one JSON file, named by --output (eval build writes a CSV by --out)
FOLDER_VERBS = ["world", "splits", "embed", "balance", "distill", "vlpretrain", "finetune", "protocol", "report",
                "export", "demo"]


def test_every_folder_writing_verb_takes_out():
    verbs = dict(commands(typer.main.get_command(app)))
    for verb in FOLDER_VERBS:
        flags = {opt for p in verbs[verb].params for opt in getattr(p, "opts", [])}
        assert "--out" in flags, f"{verb}: {sorted(flags)}"
    for verb in ("eval zeroshot", "eval retrieval", "eval linear-probe"):
        assert "--output" in {opt for p in verbs[verb].params for opt in p.opts}, verb
