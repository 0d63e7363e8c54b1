"""`clipdistill report RUNS_OR_RESULTS... --out DIR`: Markdown + self-contained HTML with plots."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        inputs: list[Path] = typer.Argument(..., help="Eval result JSONs, run folders (metrics.jsonl), balance "
                                            "report JSONs, CLIP-TD protocol rows.json, or folders of them."),
        out: Path = typer.Option(..., "--out", help="Folder for report.md, report.html and plots/."),
        teacher: str | None = typer.Option(None, help="SPEC of the teacher (as in its results) for gap closed."),
        baseline: str | None = typer.Option(None, help="SPEC of the non-distilled baseline student."),
        title: str = typer.Option("clipdistill report", help="Report title."),
    ) -> None:
        """Teacher-vs-students table and per-metric bars (std over `seed<N>` runs), training curves, balance
        histograms and a gallery of what balance dropped, CLIP-TD token selection samples, low-shot curves.

        Example: clipdistill report results/ runs/tiny bal runs/td_tiny --out report

        With --teacher and --baseline (SPECs as in the results) the table gains a gap-closed column.
        """
        from clipdistill.report import build_report

        md, html, found = build_report(list(inputs), out, teacher=teacher, baseline=baseline, title=title)
        typer.echo(f"{len(found.results)} result(s), {len(found.curves)} run(s), {len(found.balance)} balance "
                   f"report(s), {len(found.lowshot)} protocol row(s); skipped {found.skipped} other JSON file(s)")
        typer.echo(f"wrote {md} and {html}")
