"""`clipdistill data inspect SOURCE`: counts, skips per reason, image-size and caption-length stats."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _stats(values: list[int]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return f"min {values[0]}  median {values[len(values) // 2]}  max {values[-1]}"


def register(app: typer.Typer) -> None:
    data = typer.Typer(help="Inspect image-text data sources.", no_args_is_help=True)
    app.add_typer(data, name="data")

    @data.command("inspect")
    def inspect(
        source: str = typer.Argument(
            ..., help="world:DIR | imagefolder:DIR | images:DIR | pairs.csv/.tsv/.jsonl | shards/{00000..00009}.tar"),
        image_col: str = typer.Option("image", help="CSV/JSONL column holding the image path"),
        caption_col: str = typer.Option("caption", help="CSV/JSONL column holding the caption"),
        separator: str = typer.Option("auto", help="CSV separator: auto (tab for .tsv and for a tab-separated "
                                      ".csv header, as open_clip writes them), tab, or one character"),
        max_pixels: int = typer.Option(89_478_485, help="skip larger images undecoded (`too_many_pixels`)"),
        max_caption_chars: int = typer.Option(2000, help="cut longer captions before tokenising "
                                              "(`caption_truncated`)"),
        limit: int = typer.Option(0, help="Stop after this many samples (0 = all)"),
    ) -> None:
        """Count samples and skipped ones per reason; print image sizes and caption lengths.

        Example: clipdistill data inspect world_tiny/pairs/shard-00000.tar
        """
        from clipdistill.config import build_config
        from clipdistill.data import open_source
        from clipdistill.data.sources import NOT_DROPPED, SourceOptions, source_kwargs

        opts = build_config(SourceOptions, dict(image_col=image_col, caption_col=caption_col, separator=separator,
                                                max_pixels=max_pixels, max_caption_chars=max_caption_chars),
                            "options")
        src = open_source(source, **source_kwargs(opts))
        widths, heights, words, n = [], [], [], 0
        for sample in src:
            n += 1
            widths.append(sample.image.width)
            heights.append(sample.image.height)
            words.append(len(sample.text.split()))
            if limit and n >= limit:
                break
        table = Table(title=f"data inspect {escape(source)}", show_header=False)  # a path is not rich markup
        table.add_row("samples read", str(n))
        table.add_row("skipped (total)", str(src.skips.total))
        for reason, count in sorted(src.skips.items()):
            table.add_row(f"  kept: {reason}" if reason in NOT_DROPPED else f"  skipped: {reason}", str(count))
        table.add_row("image width (px)", _stats(widths))
        table.add_row("image height (px)", _stats(heights))
        table.add_row("caption length (words)", _stats(words))
        table.add_row("fingerprint", src.fingerprint()[:16])
        Console().print(table)
