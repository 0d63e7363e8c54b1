"""Re-probe a finished `vlpretrain` run folder without training: the probes of `vlpretrain/probes.py` (masked-word
accuracy per attribute type with the pair's own image and with another held-out pair's image, the words answered,
the held-out majority and the training prior), plus masked-word accuracy on the held-out pairs under the
training-time masker (whole words at `objectives.mlm.rate`, 80/10/10), over every target and over attribute
words only. Reads RUN/config.yaml and RUN/hf; writes one new JSON file (never into the run folder).

  .venv/bin/python experiments/vlpretrain_reprobe.py runs/vlpre_init --output runs/vlpre_init.reprobe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

import clipdistill  # noqa: F401  (before transformers / torchvision)
from clipdistill.config import load_config
from clipdistill.data import open_source
from clipdistill.data.attributes import AttributeVocab
from clipdistill.data.sources import source_kwargs
from clipdistill.errors import UserError
from clipdistill.vlpretrain.config import VLPretrainConfig
from clipdistill.vlpretrain.model import ImageTransform, load_folder
from clipdistill.vlpretrain.probes import run_probes
from clipdistill.vlpretrain.run import held_out, training_captions
from clipdistill.vlpretrain.task import tokenize
from clipdistill.vlpretrain.text import span_positions, whole_word_mask


@torch.no_grad()
def training_masker_accuracy(model, tok, vocab: AttributeVocab, samples, transform, max_len: int, rate: float,
                             repeats: int, seed: int) -> dict:
    """Per-token accuracy of the MLM head on the held-out pairs masked as training masks them (eval mode, own
    image), split by the attribute type of the target token ("other" = not an attribute word)."""
    captions = [s.text for s in samples]
    images = torch.stack([transform(s.image) for s in samples])
    enc = tokenize(tok, captions, max_len)
    kind = [["other"] * enc.ids.shape[1] for _ in captions]
    for b, cap in enumerate(captions):
        for m in vocab.mentions(cap):
            for p in span_positions(enc.offsets[b], enc.special[b], m.word_span):
                kind[b][p] = m.kind
    g = torch.Generator().manual_seed(seed)
    right, total = Counter(), Counter()
    for _ in range(repeats):
        masked, labels = whole_word_mask(enc.ids, enc.offsets, enc.special, rate, tok.mask_token_id, len(tok),
                                         generator=g)
        hidden, _ = model(masked, enc.attention, images)
        pred = model.mlm(hidden[:, :masked.shape[1]]).argmax(-1)
        for b, p in (labels != -100).nonzero().tolist():
            ok = int(pred[b, p] == labels[b, p])
            hidden_answer = bool(masked[b, p] != labels[b, p])  # 10% of targets keep their word in the input
            for key in ("all", kind[b][p]):
                right[key, False] += ok
                total[key, False] += 1
                right[key, True] += ok * hidden_answer
                total[key, True] += hidden_answer
    return {k: {"accuracy": right[k, False] / total[k, False], "targets": total[k, False],
                "accuracy_answer_hidden": right[k, True] / max(1, total[k, True])}
            for k, hidden in total if not hidden}


def table(metrics: dict, masker: dict) -> str:
    lines = ["type      n    majority (held-out)  training prior     own image  other image  answers (share)"]
    for kind, r in metrics["mlm"].items():
        if not r["n"]:
            lines.append(f"{kind:<9} 0")
            continue
        answers = ", ".join(f"{w} {100 * s:.0f}" for w, s in r["answers"][:4])
        prior = f"{100 * r['prior_share']:5.1f} ({r['prior_word']})" if r.get("prior_share") is not None else "-"
        lines.append(f"{kind:<9} {r['n']:<4} {100 * r['majority_share']:5.1f} ({r['majority_word']:<8}) "
                     f"{prior:<18} {100 * r['accuracy']:5.1f}      {100 * r['accuracy_other_image']:5.1f}"
                     f"        {answers}")
    itm = metrics["itm"]
    lines.append(f"ITM balanced: vs swap {100 * itm.get('accuracy_vs_swap', float('nan')):.1f}, "
                 f"vs another caption {100 * itm.get('accuracy_vs_random', float('nan')):.1f}")
    lines.append("training masker on the held-out pairs (per token; where the input hides the answer): " + ", ".join(
        f"{k} {100 * v['accuracy']:.1f}; {100 * v['accuracy_answer_hidden']:.1f} ({v['targets']})"
        for k, v in masker.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a finished vlpretrain run folder (config.yaml and hf/)")
    ap.add_argument("--output", type=Path, required=True, help="new JSON file (refused if it exists)")
    ap.add_argument("--source", help="the data source, where the run's config.yaml names one since moved")
    ap.add_argument("--repeats", type=int, default=5, help="training-masker draws over the held-out pairs")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        run = args.run.resolve()
        out = args.output.resolve()
        if out.exists():
            raise UserError(f"{args.output} exists: name a new file")
        if run in out.parents:
            raise UserError(f"{args.output} is inside the run folder {args.run}: write the re-probe elsewhere")
        if not (run / "config.yaml").is_file() or not (run / "hf").is_dir():
            raise UserError(f"{args.run}: not a finished vlpretrain run (no config.yaml or hf/)")
        torch.set_num_threads(args.threads)
        cfg = load_config(VLPretrainConfig, run / "config.yaml", [f"data.source={args.source}"] if args.source else [])
        model, tok = load_folder(run / "hf")
        model.eval()
        proc = json.loads((run / "hf" / "preprocessor_config.json").read_text())
        arch = cfg.student
        transform = ImageTransform(arch.image_size, arch.patch_size, tuple(proc["image_mean"]),
                                   tuple(proc["image_std"]))
        source = open_source(cfg.data.source, **source_kwargs(cfg.data), num_samples=cfg.data.num_samples)
        vocab = AttributeVocab(cfg.attributes)
        samples, keys, probe_from = held_out(source, cfg)
        prior = training_captions(source, keys, 10**9)
        metrics = run_probes(model, tok, vocab, samples, transform, arch.max_text_len, cfg.data.batch_size,
                             torch.device("cpu"), cfg.train.seed, prior_captions=prior)
        masker = training_masker_accuracy(model, tok, vocab, samples, transform, arch.max_text_len,
                                          cfg.objectives.mlm.rate, args.repeats, cfg.train.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {"task": "vl_pretrain_reprobe", "run": str(run), "model": str(run / "hf"), "dataset": probe_from,
              "training_captions": len(prior), "metrics": metrics, "training_masker": masker}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(metrics, masker))
    return 0


if __name__ == "__main__":
    sys.exit(main())
