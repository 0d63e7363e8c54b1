"""`clipdistill eval zeroshot|retrieval|linear-probe|build`: one result JSON per (model, dataset, task)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer

# = clipdistill.evaluation.results.DEFAULT_OUTPUT (tests/test_cli_help.py checks): importing it here would pull
# torch and open_clip into `--help`
DEFAULT_OUTPUT = "{dataset}_{model}_{pretrained}_{task}.json"

SPEC_HELP = "Model SPEC: open_clip:ARCH[@CKPT] | hf:DIR | run:DIR"
OUTPUT_HELP = f"Result JSON path; may use {{dataset}} {{model}} {{pretrained}} {{task}}. Default: {DEFAULT_OUTPUT}"


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _run(spec: str, dataset: str, task: str, output: str, skip_existing: bool, device: str | None,
         evaluate: Callable) -> None:
    """Resolve the output path first (so --skip-existing never loads a model), then evaluate and write."""
    from clipdistill.evaluation.results import output_path, write_result
    from clipdistill.zoo import load_model

    out = output_path(output, dataset=dataset, spec=spec, task=task)
    if skip_existing and out.exists():
        typer.echo(f"skip: {out} exists")
        return
    from clipdistill.runfolder import check_writable_file

    check_writable_file(out)  # a folder or an unwritable place fails now, not after the evaluation
    dev = _device(device)
    record = evaluate(load_model(spec, device=dev), dev)
    write_result(record, out)
    # scalars only: a per-class dict of 1,000 ImageNet classes belongs in the file, not on the terminal
    typer.echo(json.dumps({k: v for k, v in record["metrics"].items() if not isinstance(v, dict)}, indent=2))
    if record["provenance"]["skipped"]:
        typer.echo(f"skipped {record['provenance']['skipped']} undecodable image(s)")
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    ev = typer.Typer(help="Zero-shot, retrieval and linear-probe evaluation (CLIP_benchmark definitions).",
                     no_args_is_help=True)
    app.add_typer(ev, name="eval")

    @ev.command("zeroshot")
    def zeroshot_cmd(
        model: str = typer.Option(..., "--model", help=SPEC_HELP),
        data: Path = typer.Option(..., "--data", help="ImageFolder (+ classnames.txt, templates.txt)."),
        output: str = typer.Option(DEFAULT_OUTPUT, "--output", help=OUTPUT_HELP),
        classnames: Path | None = typer.Option(None, help="Class names file (one per line, folder order)."),
        templates: Path | None = typer.Option(None, help="Prompt templates file (one per line, with {c})."),
        name: str | None = typer.Option(None, help="Dataset name in the result (default: folder name)."),
        batch_size: int = typer.Option(64, min=1),
        workers: int = typer.Option(0, min=0, help="DataLoader workers decoding images."),
        limit: int | None = typer.Option(None, min=1, help="Evaluate only the first N images."),
        device: str | None = typer.Option(None, help="cpu / cuda (default: cuda when available)."),
        skip_existing: bool = typer.Option(False, help="Do nothing when the output already exists."),
    ) -> None:
        """Zero-shot classification: top-1, top-5, mean per-class recall (template ensembling).

        Example: clipdistill eval zeroshot --model run:runs/tiny --data world_tiny/classify/shape/test \\
            --output results/zs.json
        """
        from clipdistill.evaluation import open_imagefolder, zeroshot_eval

        ds = open_imagefolder(data, classnames_file=classnames, templates_file=templates, name=name)
        _run(model, ds.name, "zeroshot_classification", output, skip_existing, device,
             lambda m, dev: zeroshot_eval(m, ds, batch_size=batch_size, num_workers=workers, device=dev, limit=limit))

    @ev.command("retrieval")
    def retrieval_cmd(
        model: str = typer.Option(..., "--model", help=SPEC_HELP),
        data: Path = typer.Option(..., "--data", help="JSONL/CSV/TSV of image-caption rows (or its folder)."),
        output: str = typer.Option(DEFAULT_OUTPUT, "--output", help=OUTPUT_HELP),
        recall_k: list[int] = typer.Option([1, 5, 10], "--recall-k", min=1, help="Repeat for several k."),
        chunk: int = typer.Option(2048, min=1, help="Queries/targets per score block (memory ~ chunk^2)."),
        name: str | None = typer.Option(None, help="Dataset name in the result (default: file name)."),
        batch_size: int = typer.Option(64, min=1),
        workers: int = typer.Option(0, min=0, help="DataLoader workers decoding images."),
        device: str | None = typer.Option(None, help="cpu / cuda (default: cuda when available)."),
        skip_existing: bool = typer.Option(False, help="Do nothing when the output already exists."),
    ) -> None:
        """Image->text and text->image recall@k, several captions per image, in chunks.

        Example: clipdistill eval retrieval --model run:runs/tiny --data world_tiny/retrieval/test.jsonl \\
            --recall-k 1 --recall-k 5 --output results/retrieval.json
        """
        from clipdistill.evaluation import open_retrieval, retrieval_eval

        ds = open_retrieval(data, name=name)
        _run(model, ds.name, "zeroshot_retrieval", output, skip_existing, device,
             lambda m, dev: retrieval_eval(m, ds, ks=tuple(recall_k), batch_size=batch_size, num_workers=workers,
                                           device=dev, chunk=chunk))

    @ev.command("linear-probe")
    def linear_probe_cmd(
        model: str = typer.Option(..., "--model", help=SPEC_HELP),
        train: Path = typer.Option(..., "--train", help="Training ImageFolder (a val split is carved from it)."),
        data: Path = typer.Option(..., "--data", help="Test ImageFolder (same class folders)."),
        output: str = typer.Option(DEFAULT_OUTPUT, "--output", help=OUTPUT_HELP),
        val_proportion: float = typer.Option(0.2, min=0.01, max=0.9, help="Share of train held out to pick "
                                             "the weight decay."),
        weight_decay: float | None = typer.Option(None, min=0, help="Fixed weight decay (skips the search)."),
        seed: int = typer.Option(0, help="Seed of the train/val split."),
        max_iter: int = typer.Option(200, min=1, help="L-BFGS iterations per fit."),
        name: str | None = typer.Option(None, help="Dataset name in the result (default: test folder name)."),
        batch_size: int = typer.Option(64, min=1),
        workers: int = typer.Option(0, min=0, help="DataLoader workers decoding images."),
        device: str | None = typer.Option(None, help="cpu / cuda (default: cuda when available)."),
        skip_existing: bool = typer.Option(False, help="Do nothing when the output already exists."),
    ) -> None:
        """Linear probe on frozen image features; weight decay chosen on val, refit on train+val.

        Example: clipdistill eval linear-probe --model run:runs/tiny --train world_tiny/classify/shape/train \\
            --data world_tiny/classify/shape/test --output results/linear_probe.json
        """
        from clipdistill.evaluation import linear_probe_eval, open_imagefolder

        test_set = open_imagefolder(data, name=name)
        train_set = open_imagefolder(train)
        _run(model, test_set.name, "linear_probe", output, skip_existing, device,
             lambda m, dev: linear_probe_eval(m, train_set, test_set, val_proportion=val_proportion, seed=seed,
                                              weight_decay=weight_decay, max_iter=max_iter, batch_size=batch_size,
                                              num_workers=workers, device=dev))

    @ev.command("build")
    def build_cmd(
        results: list[Path] = typer.Argument(..., help="Result JSON files or folders of them."),
        out: Path = typer.Option(..., "--out", help="CSV to write."),
    ) -> None:
        """Gather result JSONs into one CSV (one row per result; metrics, provenance, efficiency columns).

        Example: clipdistill eval build results/ --out table.csv
        """
        from clipdistill.evaluation import build_csv

        rows, skipped = build_csv(list(results), out)
        note = f" (skipped {skipped} other JSON file(s))" if skipped else ""
        typer.echo(f"wrote {rows} row(s) to {out}{note}")
