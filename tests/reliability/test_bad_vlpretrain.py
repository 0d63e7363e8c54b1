"""`vlpretrain` on bad inputs: a stream source with nothing held out, too few rows, a tokenizer folder that is
not one, an attribute list with nothing to swap, out-of-range objectives, captions naming no attribute."""

from __future__ import annotations

import json

import yaml
from rel_cases import case
from rel_helpers import assert_one_line_refusal, run_main, sample_members, write_tar


def vlp_config(path, source: str, **sections) -> str:
    cfg = {"student": {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "image_size": 32, "patch_size": 16},
           "tokenizer": {"vocab_size": 100}, "data": {"source": source, "batch_size": 8},
           "probe": {"samples": 8},
           "train": {"steps": 2, "progress": False, "tensorboard": False, "device": "cpu"}}
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values} if isinstance(values, dict) and name != "attributes" else values
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@case("config", "`vlpretrain` on webdataset shards without `probe.source`",
      "one-line error: a stream's rows cannot be held out by position, set probe.source (exit 2)")
def test_stream_source_needs_a_probe_source(tmp_path):
    shard = write_tar(tmp_path / "s-0.tar", sample_members(range(24)))
    code, out = run_main("vlpretrain", vlp_config(tmp_path / "c.yaml", str(shard)), "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "stream source", "probe.source")


@case("config", "`vlpretrain` whose held-out probe pairs leave less than one batch to train on",
      "one-line error naming the row count, probe.samples and the batch size (exit 2)")
def test_too_few_rows_after_holding_out(tmp_path, pairs):
    cfg = vlp_config(tmp_path / "c.yaml", str(pairs), probe={"samples": 30})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "32 rows", "probe.samples=30")


@case("config", "`vlpretrain` with `tokenizer.path` a folder holding no tokenizer",
      "one-line error: not a BERT WordPiece tokenizer folder (exit 2)")
def test_tokenizer_path_without_a_tokenizer(tmp_path, pairs):
    (tmp_path / "empty").mkdir()
    cfg = vlp_config(tmp_path / "c.yaml", str(pairs), tokenizer={"path": str(tmp_path / "empty")})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "not a BERT WordPiece tokenizer folder")


@case("config", "`vlpretrain` attributes with one phrase in a type (nothing to swap it for)",
      "one-line error naming the type (exit 2)")
def test_attribute_type_with_one_phrase(tmp_path, pairs):
    cfg = vlp_config(tmp_path / "c.yaml", str(pairs), attributes={"colour": ["red"], "shape": ["square", "circle"]})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert_one_line_refusal(code, out, "at least 2", "colour")


@case("config", "`vlpretrain` with `objectives.mlm.rate=0.5` or `attribute_share=1.5`, or every objective weight 0",
      "`invalid config` naming the field / saying nothing would train (exit 2, no run folder)")
def test_objectives_out_of_range(tmp_path, pairs):
    cfg = vlp_config(tmp_path / "c.yaml", str(pairs))
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"), "--set", "objectives.mlm.rate=0.5")
    assert_one_line_refusal(code, out, "objectives.mlm.rate")
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"), "--set",
                         "objectives.mlm.attribute_share=1.5")
    assert_one_line_refusal(code, out, "objectives.mlm.attribute_share")
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"), "--set", "objectives.mlm.weight=0",
                         "--set", "objectives.itm.weight=0")
    assert_one_line_refusal(code, out, "nothing to train")
    assert not (tmp_path / "run").exists()


@case("data", "`vlpretrain` with `swap` negatives on captions that name no listed attribute",
      "trains; such a negative is another caption of the batch, its share logged as `itm_fallback_share`")
def test_captions_without_attributes_fall_back_and_are_counted(tmp_path, pairs):
    cfg = vlp_config(tmp_path / "c.yaml", str(pairs), attributes={"animal": ["cat", "dog"]},
                     train={"log_every": 1})
    code, out = run_main("vlpretrain", cfg, "--out", str(tmp_path / "run"))
    assert code == 0, out
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["itm_fallback_share"] > 0 for r in rows)
    probes = json.loads((tmp_path / "run" / "probes.json").read_text())["metrics"]
    assert probes["mlm"]["animal"]["n"] == 0 and "accuracy_vs_swap" not in probes["itm"]
