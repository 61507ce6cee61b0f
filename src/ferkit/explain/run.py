"""``ferkit explain PATH... --out DIR``: an overlay PNG per photo and the faces explained, as CSV and JSON.

DIR gets ``<photo>.png`` (the averaged heat for an ensemble), ``<photo>.<member>.png`` per ensemble member,
``faces.csv`` (one row per face: source, overlay, face, box, class explained, its probability, predicted class)
and ``explain.json`` (the same with every score and each member's probability). An unreadable photo is reported
through ``on_error`` and the others are explained.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2

from ferkit.analyze import _readable_stem, annotated_name, list_inputs
from ferkit.explain.gradcam import Explainer, Explanation
from ferkit.io import ImageError, atomic_write, atomic_write_csv

CSV_COLUMNS = ["source", "overlay", "face", "x", "y", "w", "h", "class", "probability", "predicted"]


def _write_png(path: Path, rgb) -> None:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("PNG encoding failed")
    atomic_write(path, lambda tmp: tmp.write_bytes(png.tobytes()))


def explain_paths(paths: Sequence[str | os.PathLike], explainer: Explainer, out: str | os.PathLike,
                  on_error: Callable[[str], None], progress: Callable[[Explanation], None] | None = None
                  ) -> list[dict]:
    """Explain every photo the paths name into ``out``; returns the JSON records written to explain.json."""
    out = Path(out)
    roots = [Path(p) for p in paths if Path(p).is_dir()]
    taken: set[str] = set()
    records, rows = [], []
    for item in list_inputs(paths, on_error):
        try:
            result = explainer.explain(item.source)
        except ImageError as exc:
            on_error(str(exc))
            continue
        stem = annotated_name(_readable_stem(item.listed, roots), item.source, taken)[: -len(".jpg")]
        overlay = f"{stem}.png"
        _write_png(out / overlay, result.overlay())
        record = {**result.to_dict(), "overlay": overlay}
        if len(result.members) > 1:
            record["member_overlays"] = {}
            for member in result.members:
                name = f"{stem}.{member}.png"
                _write_png(out / name, result.overlay(member))
                record["member_overlays"][member] = name
        records.append(record)
        for i, face in enumerate(result.faces):
            rows.append({"source": item.source, "overlay": overlay, "face": i, **dict(zip("xywh", face.box)),
                         "class": face.target, "probability": round(face.probability, 4),
                         "predicted": face.predicted})
        if progress:
            progress(result)
    atomic_write_csv(out / "faces.csv", CSV_COLUMNS, rows)
    atomic_write(out / "explain.json", lambda tmp: tmp.write_text(json.dumps(records, indent=1) + "\n"))
    return records
