"""Bad configs and inputs made from other data: refused with a message that names the problem."""

from __future__ import annotations

import pytest
from rel_cases import case, param_cases
from rel_helpers import run_main, tiny_distill_config

from clipdistill.errors import ManifestMismatch
from clipdistill.splits import load_split, write_split

BAD_CONFIGS = param_cases("config", "test_bad_config.py::test_bad_config_is_refused", [
    ("misspelt-key", "a misspelt key (`train.lrr`)", "`error: unknown key 'train.lrr'; did you mean "
     "'train.lr'?` (exit 2, no traceback, nothing trained)", (["train.lrr=0.1"], ["'train.lrr'", "'train.lr'"])),
    ("unknown-section", "an unknown top-level key (`trian`)", "`unknown key 'trian'; did you mean 'train'?`",
     (["trian.lr=0.1"], ["'trian'", "'train'"])),
    ("wrong-type", "a wrong type (`train.epochs=many`)", "`train.epochs: Input should be a valid integer`",
     (["train.epochs=many"], ["train.epochs", "valid integer"])),
    ("out-of-range", "an impossible value (`data.batch_size=0`)", "`data.batch_size: ... greater than or "
     "equal to 1`", (["data.batch_size=0"], ["data.batch_size", "greater than or equal to 1"])),
])


@pytest.mark.parametrize("bad", BAD_CONFIGS)
def test_bad_config_is_refused(tmp_path, pairs, bad):
    overrides, needles = bad
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(pairs))
    code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"), *[a for o in overrides for a in ("--set", o)])
    assert code == 2 and "Traceback" not in out and "error: invalid config" in out, out
    for n in needles:
        assert n in out, (n, out)
    assert not (tmp_path / "run").exists()


@case("config", "a YAML config with a `!!python/object/apply:os.system` tag",
      "refused by `yaml.safe_load` (`tags that construct objects are not allowed`); the command never runs")
def test_yaml_object_tags_are_refused(tmp_path, pairs):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f"data: {{source: {pairs}}}\ntrain: !!python/object/apply:os.system ['touch {marker}']\n")
    code, out = run_main("distill", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 2 and "construct objects are not allowed" in out and "Traceback" not in out, out
    assert not marker.exists() and not (tmp_path / "run").exists()


@case("config", "a low-shot / shift split file made from other annotations (or for another task)",
      "`ManifestMismatch` naming the differing field (`source.sha256`, `task`)")
def test_split_from_other_data_is_refused(tmp_path):
    path = tmp_path / "split.json"
    write_split(path, kind="low_shot", task="vqa", source={"sha256": "a" * 64}, params={}, ids={"0.01": ["q1"]})
    assert load_split(path, task="vqa", source_sha256="a" * 64)["ids"] == {"0.01": ["q1"]}
    with pytest.raises(ManifestMismatch, match="source.sha256"):
        load_split(path, task="vqa", source_sha256="b" * 64)
    with pytest.raises(ManifestMismatch, match="task"):
        load_split(path, task="snli_ve", source_sha256="a" * 64)
