"""`clipdistill report`: Markdown + self-contained HTML from eval results, run folders, balance
reports and CLIP-TD protocol rows."""

from __future__ import annotations

from pathlib import Path

from clipdistill.errors import UserError
from clipdistill.report.gallery import balance_gallery, td_run_label, td_sample_figure
from clipdistill.report.inputs import ReportInputs, collect
from clipdistill.report.plots import balance_histogram, lowshot_curves, metric_bars, training_curves
from clipdistill.report.render import Section, table_rows, write_report
from clipdistill.report.tables import comparison_table, seed_groups

__all__ = ["ReportInputs", "build_report", "collect"]

GAP_NOTE = ("Gap closed = (student - baseline) / (teacher - baseline), averaged over the metric columns where "
            "the teacher leads the baseline by at least 1 point (empty when it leads on none); "
            "throughput is encode speed measured during evaluation, on the machine and batch size recorded "
            "in each result's efficiency block.")


SEEDS_NOTE = ("Bars: each model's metric in percent. Results of one model trained with several seeds (a `seed<N>` "
              "part in the SPEC, e.g. run:runs/cid-seed0 and run:runs/cid-seed1) are one bar, their mean, with "
              "a one-standard-deviation error bar.")
GALLERY_NOTE = ("Gallery: for a few clusters, each dropped sample beside the kept sample most similar to it in the "
                "de-dup space; at or above the threshold it was dropped as a near-duplicate of that one, below it "
                "by the cluster cap or the perceptual pass.")
TD_NOTE = ("Training examples of the fine-tune, scored by its trained student and the teacher: the patch tokens "
           "the selection rule distils are outlined (others dimmed), the text tokens it distils are highlighted, "
           "and the instance weight is the teacher's confidence weight of the example.")
TD_FIGURES = 3


def build_report(paths: list[str | Path], out: str | Path, *, teacher: str | None = None,
                 baseline: str | None = None, title: str = "clipdistill report") -> tuple[Path, Path, ReportInputs]:
    inputs = collect(paths)
    sections = []
    if inputs.results:
        try:
            table = comparison_table(inputs.results, teacher, baseline)
        except KeyError as e:
            raise UserError(e.args[0]) from None
        note = GAP_NOTE if teacher and baseline else "Pass --teacher and --baseline to get the gap-closed column."
        sections.append(Section("Teacher versus students", table=table_rows(table), text=note))
        bars = metric_bars(seed_groups(table), table.columns)
        if bars is not None:
            sections.append(Section("Per metric", plots=[("teacher, baseline and students per metric", bars)],
                                    text=SEEDS_NOTE))
    curves = [(f"training curves {name}", png) for name, rows in inputs.curves.items()
              if (png := training_curves(name, rows)) is not None]
    if curves:
        sections.append(Section("Training curves", plots=curves))
    if inputs.balance:
        plots, notes = [(f"balance {name}", balance_histogram(name, rep)) for name, rep in inputs.balance.items()], []
        for name, folder in inputs.balance_dirs.items():
            png, why = balance_gallery(folder)
            if png is not None:
                plots.append((f"balance {name}: what was dropped and its nearest kept sample", png))
            else:
                notes.append(f"{name}: {why}")
        sections.append(Section("Semantic balance", plots=plots, text=" ".join([GALLERY_NOTE, *notes])
                                if inputs.balance_dirs else ""))
    td = [(f"CLIP-TD samples {td_run_label(p)}", png) for p in inputs.td_samples[:TD_FIGURES]
          if (png := td_sample_figure(p)) is not None]
    if td:
        sections.append(Section("CLIP-TD: selected tokens and instance weights", plots=td, text=TD_NOTE))
    if inputs.lowshot:
        sections.append(Section("Low-shot curves (CLIP-TD protocol)", plots=lowshot_curves(inputs.lowshot),
                                text="Mean over seeds, error bars one standard deviation."))
    md, html = write_report(Path(out), title, sections)
    return md, html, inputs
