"""Paths, SPECs and commands printed through rich: brackets in them are text, not markup."""

from __future__ import annotations

from rel_cases import case
from rel_helpers import cli, run_main, write_pairs
from safetensors.torch import save_file


@case("config", "a path or SPEC with square brackets (`data/[/x]/pairs.csv`, `--set 'teacher.models=[run:DIR]'`) "
      "printed by `data inspect`, `models info` or the demo",
      "printed as given; before: rich read `[/x]` as a closing tag (MarkupError traceback) and dropped "
      "`[run:DIR]` from the demo's printed commands, so the command shown was not the one run")
def test_brackets_are_printed_as_text(tmp_path):
    import torch

    from clipdistill import demo
    from clipdistill.zoo import load_model

    folder = tmp_path / "[/x]"
    pairs = write_pairs(folder, n=4)
    proc = cli("data", "inspect", str(pairs), timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "[/x]" in proc.stdout and "samples read" in proc.stdout

    weights = folder / "w.safetensors"
    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in load_model("open_clip:cd-student-xs-32").inner.state_dict().items()},
              str(weights))
    code, out = run_main("models", "info", f"open_clip:cd-student-xs-32@{weights}")
    assert code == 0 and "[/x]" in out and "Traceback" not in out, out

    argv = ["distill", "cid.yaml", "--set", "teacher.models=[run:/runs/demo/teacher]", "--set", "x=" + "y" * 120]
    with demo.console.capture() as captured:
        demo.print_command(argv)
    lines = captured.get().strip().splitlines()
    assert lines == ["$ clipdistill distill cid.yaml --set 'teacher.models=[run:/runs/demo/teacher]' --set x="
                     + "y" * 120], lines  # one line, whatever the console width, and nothing dropped
