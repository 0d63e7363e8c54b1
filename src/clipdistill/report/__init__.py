"""`clipdistill report`: Markdown + self-contained HTML from eval results, run folders, balance
reports and CLIP-TD protocol rows."""

from __future__ import annotations

from pathlib import Path

from clipdistill.errors import UserError
from clipdistill.report.inputs import ReportInputs, collect
from clipdistill.report.plots import balance_histogram, lowshot_curves, training_curves
from clipdistill.report.render import Section, table_rows, write_report
from clipdistill.report.tables import comparison_table

__all__ = ["ReportInputs", "build_report", "collect"]

GAP_NOTE = ("Gap closed = (student - baseline) / (teacher - baseline), averaged over the metric columns where "
            "the teacher leads the baseline by at least 1 point (empty when it leads on none); "
            "throughput is encode speed measured during evaluation, on the machine and batch size recorded "
            "in each result's efficiency block.")


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
    curves = [(f"training curves {name}", png) for name, rows in inputs.curves.items()
              if (png := training_curves(name, rows)) is not None]
    if curves:
        sections.append(Section("Training curves", plots=curves))
    if inputs.balance:
        sections.append(Section("Semantic balance", plots=[(f"balance {name}", balance_histogram(name, rep))
                                                          for name, rep in inputs.balance.items()]))
    if inputs.lowshot:
        sections.append(Section("Low-shot curves (CLIP-TD protocol)", plots=lowshot_curves(inputs.lowshot),
                                text="Mean over seeds, error bars one standard deviation."))
    md, html = write_report(Path(out), title, sections)
    return md, html, inputs
