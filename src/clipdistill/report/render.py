"""Write the report: `report.md` (+ `plots/*.png`) and a self-contained `report.html` (plots inlined
as base64 PNG, inline CSS, no scripts, nothing fetched)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from clipdistill.manifest import atomic_write_text
from clipdistill.report.tables import Table

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
       "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}")


@dataclass
class Section:
    title: str
    table: list[list[str]] | None = None  # header row first
    plots: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, png)
    text: str = ""


def _fmt(v: object, pct: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def table_rows(t: Table) -> list[list[str]]:
    """Header + rows; metric columns and gap closed shown in percent."""
    head = ["model", "role", "params (M)", "images/s", "texts/s", *[f"{c} (%)" for c in t.columns], "gap closed (%)"]
    body = [[r["model"], r["role"], _fmt(r["params_m"]), _fmt(r["image_per_s"]), _fmt(r["text_per_s"]),
             *[_fmt(r.get(c), pct=True) for c in t.columns], _fmt(r["gap"], pct=True)] for r in t.rows]
    return [head, *body]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def _md_table(rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(esc[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in esc[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(out: Path, title: str, sections: list[Section]) -> tuple[Path, Path]:
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    md, body = [f"# {title}", ""], [f"<h1>{html.escape(title)}</h1>"]
    n = 0
    for s in sections:
        md += [f"## {s.title}", ""]
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            md += [s.text, ""]
            body.append(f"<p>{html.escape(s.text)}</p>")
        if s.table:
            md += [_md_table(s.table), ""]
            body.append(_html_table(s.table))
        for caption, png in s.plots:
            n += 1
            name = f"{n:02d}_{_slug(caption)}.png"
            (plots_dir / name).write_bytes(png)
            md += [f"![{caption}](plots/{name})", ""]
            b64 = base64.b64encode(png).decode()
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
                                 f"</title><style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
    return md_path, html_path
