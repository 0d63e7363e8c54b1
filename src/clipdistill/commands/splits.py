"""`clipdistill splits`: low-shot, domain-shift and VQA-CP-style split manifests for a task."""

from __future__ import annotations

from pathlib import Path

import typer


def _floats(text: str) -> list[float]:
    from clipdistill.errors import UserError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"not a comma-separated list of numbers: {text!r}") from None


def register(app: typer.Typer) -> None:
    @app.command("splits")
    def splits(
        task: str = typer.Option(..., help="vqa | snli_ve | vcr"),
        data: Path = typer.Option(..., help="The task folder (world: DIR/tasks/<task>; or the real dataset's folder)"),
        out: Path = typer.Option(..., help="Folder for lowshot.json, shift_<field>.json, vqa_cp.json, manifest.json"),
        split: list[str] = typer.Option(["train"], help="Split(s) to read, e.g. train (repeat to pool: VQA-CP)"),
        images: Path = typer.Option(None, help="Image folder, if not the task folder's images/ (vcr: vcr1images/)"),
        fractions: str = typer.Option("0.01,0.05,0.1,0.25,1", help="Nested low-shot fractions"),
        seeds: str = typer.Option("0,1,2", help="Seeds of the low-shot subsets"),
        shift_by: list[str] = typer.Option(None, help="Field(s) for domain-shift splits (default per task: vqa "
                                           "question_type; snli_ve style; vcr source, movie, qtype)"),
        test_values: str = typer.Option("", help="Comma-separated values of the field to hold out as test "
                                        "(default: a seeded 20% of the values)"),
        vqa_cp: bool = typer.Option(False, "--vqa-cp", help="Also write a VQA-CP-style re-split (vqa only)"),
        seed: int = typer.Option(0, help="Seed of the shift / VQA-CP splits"),
    ) -> None:
        """Write split manifests (ids + a hash of the annotations) for low-shot / domain-shift studies.

        Example: clipdistill splits --task vcr --data world_tiny/tasks/vcr --out splits/vcr --shift-by source \\
            --test-values movieclips
        """
        from clipdistill.data.tasks import open_task
        from clipdistill.manifest import write_manifest
        from clipdistill.splits import make_splits

        parts = [open_task(task, data, s, images) for s in split]
        pooled = parts[0]
        for p in parts[1:]:
            pooled = pooled + p
        written = make_splits(pooled, out, task=task, fractions=_floats(fractions),
                              seeds=[int(x) for x in _floats(seeds)], shift_fields=shift_by or None,
                              test_values=[v for v in test_values.split(",") if v] or None, vqa_cp=vqa_cp, seed=seed)
        write_manifest(out, "splits", task=task, data=str(data), splits=split,
                       source={"sha256": pooled.source_sha256(), "files": [p.name for p in pooled.files]},
                       skipped=dict(pooled.skips), files=[p.name for p in written])
        typer.echo(f"{task}: {len(pooled.examples)} examples, {pooled.skips.total} skipped "
                      f"{dict(pooled.skips) or ''}")
        for p in written:
            typer.echo(f"  wrote {p}")
