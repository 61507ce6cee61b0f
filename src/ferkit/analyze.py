"""`ferkit analyze` over many files: resumable, atomic outputs, one line per bad file, a summary at the end.

With an output folder, each finished image is appended to ``results.jsonl`` as soon as it is done (with the file's
size and mtime), so a rerun with the same ``--out`` skips finished, unchanged images; failed images are not recorded
and are retried. ``results.json`` and ``faces.csv`` are rewritten atomically from the journal at the end.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from ferkit.annotate import annotate
from ferkit.io import atomic_write
from ferkit.recognizer import Recognizer, iter_image_paths
from ferkit.results import CSV_BASE_COLUMNS, ImageResult

JOURNAL = "results.jsonl"


@dataclass
class AnalyzeSummary:
    images: int = 0
    faces: int = 0
    skipped_done: int = 0
    failed: list[str] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)


def _file_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_journal(path: Path) -> dict[str, dict]:
    """Finished records by source; a line cut short by a kill is ignored (that image is simply redone)."""
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["source"]] = rec
    return done


def write_csv(path: Path, results: Iterable[ImageResult], labels: list[str]) -> None:
    """One row per face, a column per emotion (atomic)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_BASE_COLUMNS + labels, extrasaction="ignore")
            w.writeheader()
            for r in results:
                w.writerows(r.rows())
    atomic_write(path, write)


def write_json(path: Path, results: Iterable[ImageResult]) -> None:
    payload = [r.to_dict() for r in results]
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + "\n"))


def _annotated_name(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if root.is_dir() and root in path.parents:
            return "__".join(path.relative_to(root).with_suffix(".jpg").parts)
    return path.with_suffix(".jpg").name


def analyze_paths(paths: list[str], recognizer: Recognizer, out: str | os.PathLike | None = None,
                  annotated: bool = True, on_error: Callable[[str], None] | None = None,
                  progress: bool = True) -> AnalyzeSummary:
    """Analyze files and folders; with ``out``, write journal, JSON, CSV and annotated images there (resumable)."""
    from tqdm import tqdm

    files = list(iter_image_paths(paths))
    summary = AnalyzeSummary()
    out_dir = Path(out) if out is not None else None
    done: dict[str, dict] = {}
    journal = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        if annotated:
            (out_dir / "annotated").mkdir(exist_ok=True)
        done = _read_journal(out_dir / JOURNAL)
        journal = open(out_dir / JOURNAL, "a")
    todo = []
    for f in files:
        rec = done.get(str(f))
        if rec is not None and f.exists() and rec.get("file_key") == _file_key(f):
            summary.skipped_done += 1
            continue
        todo.append(f)
    roots = [Path(p) for p in paths]
    try:
        bar = tqdm(total=len(todo), disable=not progress or len(todo) < 2, desc="analyze", unit="img")
        for result, image in recognizer.analyze_with_images(todo):
            bar.update(1)
            if result.error:
                summary.failed.append(result.error)
                if on_error:
                    on_error(result.error)
                continue
            summary.images += 1
            summary.faces += len(result.faces)
            if out_dir is None:
                summary.results.append(result)
                continue
            if annotated and image is not None:
                target = out_dir / "annotated" / _annotated_name(Path(result.source), roots)
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(annotate(image, result), cv2.COLOR_RGB2BGR),
                                        [cv2.IMWRITE_JPEG_QUALITY, 90])
                if ok:
                    atomic_write(target, lambda tmp: tmp.write_bytes(jpeg.tobytes()))
            rec = result.to_dict()
            rec["file_key"] = _file_key(Path(result.source))
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            done[result.source] = rec
        bar.close()
    finally:
        if journal is not None:
            journal.close()
    if out_dir is not None:
        summary.results = [ImageResult.from_dict(r) for r in done.values()]
        write_json(out_dir / "results.json", summary.results)
        write_csv(out_dir / "faces.csv", summary.results, recognizer.runtime.labels)
    return summary
