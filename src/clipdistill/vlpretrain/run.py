"""`run_vlpretrain`: tokenizer, ViLT student, held-out probe pairs and loader from a `VLPretrainConfig`; train
with the shared loop (`fit`); write the Hugging Face folder (`RUN/hf/`), the probes (`RUN/probes.json`) and the
run folder (resolved config, manifest, checkpoints, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

from clipdistill.data import MapSource, Sample, make_loader, open_source
from clipdistill.data.attributes import AttributeVocab
from clipdistill.data.sources import source_kwargs
from clipdistill.errors import UserError
from clipdistill.manifest import atomic_write_text, read_manifest, write_manifest
from clipdistill.runfolder import history_fields, record_config
from clipdistill.train import fit, init_distributed, shutdown
from clipdistill.train.checkpoint import check_fits, resolve_resume
from clipdistill.train.distributed import DistInfo, summed_counts
from clipdistill.vlpretrain.config import VLPretrainConfig
from clipdistill.vlpretrain.model import ImageTransform, ViltPretrainer, save_folder, vilt_config
from clipdistill.vlpretrain.probes import run_probes
from clipdistill.vlpretrain.task import VLPretrainTask
from clipdistill.vlpretrain.text import build_wordpiece, load_tokenizer
from clipdistill.vlpretrain.vit_init import apply_init, load_tower_init, resolve_arch

HF_DIR, TOKENIZER_DIR, PROBES = "hf", "tokenizer", "probes.json"


def _no_tokens(texts: list[str]) -> torch.Tensor:
    """The loader's text view: the task tokenises the captions itself (it needs negatives and word offsets)."""
    return torch.zeros(len(texts), 1, dtype=torch.long)


def held_out(source, cfg: VLPretrainConfig) -> tuple[list[Sample], list[str] | None, str]:
    """(probe samples, training keys or None = all, what was held out). Held-out rows never reach training."""
    n = cfg.probe.samples
    if cfg.probe.source:
        probe = open_source(cfg.probe.source, **source_kwargs(cfg.data))
        samples = []
        if isinstance(probe, MapSource):
            for i in range(len(probe)):
                if len(samples) == n:
                    break
                s = probe[i]
                if s is not None:
                    samples.append(s)
        else:
            for s in probe:
                samples.append(s)
                if len(samples) == n:
                    break
        return samples, None, cfg.probe.source
    if not isinstance(source, MapSource):
        raise UserError(f"{cfg.data.source} is a stream source: set probe.source to held-out image-caption pairs "
                        "(rows of a stream cannot be left out of training by position)")
    if len(source) < n + cfg.data.batch_size:
        raise UserError(f"{cfg.data.source}: {len(source)} rows leave fewer than one batch ({cfg.data.batch_size}) "
                        f"after holding out probe.samples={n}: lower probe.samples or use a larger source")
    rows = range(len(source) - n, len(source))
    samples = [s for s in (source[i] for i in rows) if s is not None]
    keep = source.keys[:len(source) - n]
    return samples, keep, f"{cfg.data.source} rows {rows.start}..{rows.stop - 1}"


def training_captions(source, keys: list[str] | None, limit: int) -> list[str]:
    if isinstance(source, MapSource):
        allowed = set(keys) if keys is not None else None
        out = []
        for k, t in zip(source.keys, source.texts, strict=True):
            if t and (allowed is None or k in allowed):
                out.append(t)
                if len(out) == limit:
                    break
        return out
    out = []
    for s in source:  # a stream source has no caption list: read (and decode) its first samples
        out.append(s.text)
        if len(out) == limit:
            break
    return out


def tokenizer_for(cfg: VLPretrainConfig, out: Path, source, keys, info: DistInfo, resume: bool):
    """The configured tokenizer; else the one this run built (kept in RUN/tokenizer so a resume reuses it); else
    a WordPiece vocabulary built by rank 0 from the training captions, which the other ranks then read."""
    if cfg.tokenizer.path:
        return load_tokenizer(Path(cfg.tokenizer.path))
    folder = out / TOKENIZER_DIR
    if not (resume and (folder / "tokenizer.json").is_file()) and info.is_main:
        captions = training_captions(source, keys, cfg.tokenizer.build_captions)
        if not captions:
            raise UserError(f"{cfg.data.source}: no captions to build a vocabulary from")
        build_wordpiece(captions, cfg.tokenizer.vocab_size, folder)
    if info.enabled:
        dist.barrier()
    return load_tokenizer(folder)


def check_resumed_init(ckpt: Path, init) -> None:
    """A resumed run keeps the init it started from in its manifest: `student.init` naming other weights now
    (the CLIP retrained in place, another SPEC) is refused rather than recorded over the real one."""
    path = ckpt.parents[1] / "manifest.json"  # RUN/checkpoints/step_N -> RUN
    if not path.is_file():
        return
    recorded = read_manifest(path.parent).get("init")
    now = init.record() if init else None
    was, new = ((r or {}).get("weights_sha256") for r in (recorded, now))
    if was != new:
        def name(r):
            return f"{r['spec']} (weights sha256 {r['weights_sha256'][:12]})" if r else "random init (no student.init)"

        raise UserError(f"--resume: {ckpt} started from {name(recorded)}, but this config's student.init is "
                        f"{name(now)}; resume with the student.init the run started from")


def run_vlpretrain(cfg: VLPretrainConfig, out: Path, resume: str | None = None) -> Path:
    info = init_distributed(cfg.train.device, cfg.train.collective_timeout_s)
    try:
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
        init = load_tower_init(cfg.student.init) if cfg.student.init else None
        if init is not None:  # the tower fixes the architecture; config.yaml records the resolved one
            cfg = cfg.model_copy(update={"student": resolve_arch(cfg.student, init)})
        source = open_source(cfg.data.source, **source_kwargs(cfg.data), num_samples=cfg.data.num_samples)
        vocab = AttributeVocab(cfg.attributes)
        probe_samples, keys, probe_from = held_out(source, cfg)
        if len(probe_samples) < 2:
            raise UserError(f"probe: {len(probe_samples)} readable held-out pairs in {probe_from}; need at least 2")
        tokenizer = tokenizer_for(cfg, out, source, keys, info, resume is not None)
        arch = cfg.student
        torch.manual_seed(cfg.train.seed)  # the same init on every rank (DDP also broadcasts rank 0's)
        model = ViltPretrainer(vilt_config(arch, tokenizer), itc=cfg.objectives.itc.weight > 0)
        if init is not None:
            apply_init(model.vilt, init)
        task = VLPretrainTask(model, tokenizer, cfg.objectives, vocab, arch.max_text_len)
        transform = ImageTransform(arch.image_size, arch.patch_size, *((init.image_mean, init.image_std) if init
                                                                       else ()))
        views = [(transform, _no_tokens)]
        train_cfg = cfg.train
        if not cfg.objectives.itm.weight:  # ViLT's pooler serves only ITM: unused parameters under DDP
            train_cfg = train_cfg.model_copy(update={"ddp_find_unused_parameters": True})

        def loader_factory(epoch: int, start_step: int = 0):
            return make_loader(source, views, cfg.data.batch_size, shuffle=True, seed=cfg.train.seed * 1000 + epoch,
                               num_workers=cfg.data.num_workers, rank=info.rank, world_size=info.world_size,
                               keys=keys, start_step=start_step, drop_last=True, device=info.device)

        ckpt = resolve_resume(out, resume)
        if ckpt is not None:  # a config edited to another architecture is refused before the folder changes
            check_fits(ckpt, task.trainable())
            check_resumed_init(ckpt, init)
        manifest: dict = {}
        if info.is_main:
            history = record_config(cfg, out, resumed=ckpt is not None)  # a changed config keeps the earlier one
            manifest = dict(student=model.config.to_dict(), tokenizer=cfg.tokenizer.path or str(out / TOKENIZER_DIR),
                            data={"source": cfg.data.source, "fingerprint": source.fingerprint()},
                            probe={"held_out": probe_from, "samples": len(probe_samples)},
                            init=init.record() if init else None, world_size=info.world_size,
                            **history_fields(history))
            manifest["student"].pop("transformers_version", None)
            write_manifest(out, "vlpretrain", **manifest)
        fit(task, loader_factory, train_cfg, out, resume=resume, counts=source.skips)
        skips = summed_counts(source.skips, info)
        if info.is_main:
            folder = save_folder(model, tokenizer, out / HF_DIR, arch.image_size, arch.patch_size,
                                 init.record() if init else None)
            # each type's training prior needs the training captions: read from a table source's caption
            # column; a stream's would mean decoding its samples again, so a stream run reports none
            prior = training_captions(source, keys, cfg.tokenizer.build_captions) if isinstance(source, MapSource) \
                else None
            probes = run_probes(model, tokenizer, vocab, probe_samples, transform, arch.max_text_len,
                                cfg.data.batch_size, info.device, cfg.train.seed, prior_captions=prior)
            result = {"task": "vl_pretrain_probes", "model": str(folder), "dataset": probe_from, "metrics": probes,
                      "provenance": {"data_fingerprint": source.fingerprint(), "config": str(out / "config.yaml")}}
            atomic_write_text(out / PROBES, json.dumps(result, indent=2))
            schedule = read_manifest(out).get("schedule")
            write_manifest(out, "vlpretrain", **manifest, skipped_reads=skips, probes=probes,
                           **({"schedule": schedule} if schedule else {}))
    finally:
        shutdown(info)
    return out


def probe_table(probes: dict) -> str:
    """The probes as a few plain lines (what the command prints)."""
    lines = ["masked word (every piece right) vs majority share; with another pair's image; training prior:"]
    for kind, r in probes["mlm"].items():
        if r["n"]:
            prior = (f"  prior {100 * r['prior_share']:5.1f}% ({r['prior_word']!r})"
                     if r.get("prior_share") is not None else "")
            lines.append(f"  {kind:<10} {100 * r['accuracy']:5.1f}%  majority {100 * r['majority_share']:5.1f}% "
                         f"({r['majority_word']!r})  other image {100 * r['accuracy_other_image']:5.1f}%{prior}"
                         f"  n={r['n']}")
        else:
            lines.append(f"  {kind:<10} no held-out caption names one")
    itm = probes["itm"]
    parts = [f"{k.replace('accuracy_', '')} {100 * itm[k]:.1f}%" for k in ("accuracy_vs_swap", "accuracy_vs_random")
             if k in itm]
    lines.append(f"ITM balanced accuracy (chance 50%): {', '.join(parts)}  pairs={itm['pairs']}")
    return "\n".join(lines)
