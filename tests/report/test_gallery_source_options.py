"""The balance gallery opens the source the way `embed` opened it (its recorded `source.options`)."""

from __future__ import annotations

import csv
import json

from PIL import Image

from clipdistill.features.balance import BalanceOptions, run_balance
from clipdistill.features.embed import EmbedOptions, embed_features
from clipdistill.report.gallery import balance_gallery

COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 220, 20)]


def test_gallery_reads_a_csv_with_the_columns_embed_was_given(tmp_path):
    (tmp_path / "img").mkdir()
    with open(tmp_path / "pairs.csv", "w", newline="") as f:  # columns only `--image-col/--caption-col` name
        w = csv.writer(f, delimiter=";")
        w.writerow(["picture", "words"])
        for i in range(16):  # four near-copies of each picture: balance drops some of each
            im = Image.new("RGB", (48, 48), COLORS[i % 4])
            im.paste((i * 9, i * 5, 90), (i, i, i + 6, i + 6))
            im.save(tmp_path / "img" / f"{i}.png")
            w.writerow([f"img/{i}.png", f"picture {i % 4}"])
    how = {"image_col": "picture", "caption_col": "words", "separator": ";"}
    feats = embed_features(EmbedOptions(teacher="open_clip:cd-student-xs-32", data=str(tmp_path / "pairs.csv"),
                                        device="cpu", **how), tmp_path / "feats")
    bal = tmp_path / "bal"
    run_balance(feats, bal, BalanceOptions(clusters=4, target_keep=0.5, device="cpu"))
    manifest = json.loads((bal / "manifest.json").read_text())
    assert manifest["source"]["options"].items() >= how.items()
    png, note = balance_gallery(bal)
    assert note == "" and png is not None and png.startswith(b"\x89PNG")

    # without the options the CSV cannot be read: the gallery is left out with a note, as before the fix
    del manifest["source"]["options"]
    (bal / "manifest.json").write_text(json.dumps(manifest))
    png, note = balance_gallery(bal)
    assert png is None and note.startswith("gallery left out"), note
