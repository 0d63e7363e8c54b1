"""`clipdistill world`: write the embedded procedural world (a stand-in for real data; docs/world.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("world")
    def world(
        out: Path = typer.Option(..., help="New (or empty) folder to write the world into"),
        size: str = typer.Option("tiny", help="tiny (~300 pairs, seconds) | small (~3000) | default (~24000)"),
        seed: int = typer.Option(0, help="Same seed, same bytes"),
        dup_rate: float | None = typer.Option(None, help="share of pair scenes given 1-4 near-duplicate copies "
                                              "(default 0.15; docs/world.md)"),
    ) -> None:
        """Write pairs, classification / retrieval sets and VQA / SNLI-VE / VCR files in their real formats.

        Example: clipdistill world --out world_tiny --size tiny --seed 0
        """
        from clipdistill.world import build_world

        doc = build_world(out, size, seed, dup_rate)
        c = doc["counts"]
        typer.echo(f"world ({size}, seed {seed}) in {out}: {doc['images']} images, {c['pairs']['pairs']} pairs, "
                        f"VQA {c['vqa']['train']}/{c['vqa']['val']}, SNLI-VE {c['snli_ve']['train']}/"
                        f"{c['snli_ve']['dev']}/{c['snli_ve']['test']}, VCR {c['vcr']['train']}/{c['vcr']['val']} "
                        "(train/val[/test] items)")
