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
    ("negclip-without-negatives", "the negclip loss without `data.hard_negatives`", "`loss.negclip needs a hard "
     "negative caption per pair: set data.hard_negatives=swap`", (["loss.negclip={}"], ["data.hard_negatives=swap"])),
    ("attribute-alone", "an attribute type with one phrase (`data.attributes={colour: [red]}`: nothing to swap it "
     "with)", "`data.attributes: each type needs at least 2 different phrases to swap: {'colour': ['red']}`",
     (["data.attributes={colour: [red]}"], ["data.attributes", "at least 2 different phrases"])),
    ("negatives-unread", "`data.hard_negatives=swap` with no loss that reads them", "`... no loss reads hard "
     "negatives: add loss.negclip`", (["data.hard_negatives=swap"], ["no loss reads hard negatives"])),
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


def bomb(levels: int, width: int = 10) -> str:
    """A "billion laughs": each anchor aliases the previous one `width` times (width**levels leaves)."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@case("config", "a \"billion laughs\" YAML (9 levels of 10 aliases, 10^9 leaves) under an integer field "
      "(`train.epochs: *l8`), and a small one (10^3 leaves) that is allowed to load",
      "refused while loading (`anchors/aliases expand to more than 200,000 nodes`, exit 2) with peak Python "
      "memory under 20 MB; the small one's validation error echoes a value cut to at most 200 characters")
def test_yaml_alias_bomb_is_refused_with_bounded_memory(tmp_path, pairs):
    import tracemalloc

    from clipdistill.config import load_config
    from clipdistill.distill.config import DistillConfig
    from clipdistill.errors import ConfigError

    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(bomb(9) + f"data: {{source: {pairs}}}\ntrain: {{epochs: *l8}}\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match="expand to more than 200,000 nodes"):
            load_config(DistillConfig, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak
    code, out = run_main("distill", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 2 and "expand to more than" in out and "Traceback" not in out, out
    assert not (tmp_path / "run").exists()

    small = tmp_path / "small.yaml"
    small.write_text(bomb(3) + f"data: {{source: {pairs}}}\ntrain: {{epochs: *l2}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(DistillConfig, small)
    line = next(x for x in str(err.value).splitlines() if "train.epochs" in x)
    assert "valid integer" in line and len(line) < 400, line
    recursive = tmp_path / "self.yaml"
    recursive.write_text("train: &t {lr: *t}\n")
    with pytest.raises(ConfigError, match="recursive"):
        load_config(DistillConfig, recursive)


@case("config", "a config with several mistakes at once (wrong types, a misspelt key, a bad section value) among "
      "long values that are fine", "`error: invalid config (PATH), N problems:` then one line per problem naming its "
      "key path (at most 8, the rest counted); no section or whole config is echoed (exit 2)")
def test_several_config_mistakes_are_listed_one_line_each(tmp_path, pairs):
    import yaml

    fine = "a caption template that is long but correct " * 5
    cfg = yaml.safe_load(open(tiny_distill_config(tmp_path / "c.yaml", str(pairs))))
    cfg["train"].update(epochs="many", lrr=0.1)
    cfg["data"].update(batch_size=0, note=fine)
    cfg["student"] = "open_clip:cd-student-xs-32"  # a section given as a string
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, out = run_main("distill", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in out, out
    lines = out.strip().splitlines()
    assert lines[0] == f"error: invalid config ({tmp_path / 'c.yaml'}), 5 problems:", out
    assert sorted(ln.split(":")[0].strip() for ln in lines[1:]) == [
        "data.batch_size", "student", "train.epochs", "unknown key 'data.note' (valid here", "unknown key 'train.lrr'; "
        "did you mean 'train.lr'?"], out
    assert fine not in out and str(pairs) not in out and "{" not in out
    assert not (tmp_path / "run").exists()
