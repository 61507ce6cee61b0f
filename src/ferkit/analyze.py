"""`ferkit analyze` over many files: resumable, atomic outputs, one line per bad file, a summary at the end.

Inputs are files and folders (searched recursively). Each file is known by its absolute path with symlinks resolved,
and that is the ``source`` shown in every result: ``x.jpg``, ``./x.jpg``, ``/abs/x.jpg`` and a symlink to it are one
file, analysed once and listed once.

With an output folder, each finished image is appended to the journal ``results.jsonl`` as soon as it is done, so a
rerun with the same ``--out`` skips finished, unchanged images and redoes changed ones; ``results.json`` and
``faces.csv`` are rewritten atomically from the journal at the end and hold every image whose file is still as it
was analysed (this run's and earlier runs' into the same folder). A rerun with other settings (model, detector,
min_face, max_faces, tta) is refused unless ``force``; two runs into one folder never mix (the second stops at once).
The rules are in :mod:`ferkit.journal`.

No single file stops the batch: an unreadable, vanished or corrupt file is one line through ``on_error`` (and is
retried by the next run); the others are analysed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from ferkit.annotate import annotate
from ferkit.io import atomic_write, atomic_write_csv
from ferkit.journal import ANNOTATED, Journal, file_key, open_journal, recognizer_settings
from ferkit.recognizer import Recognizer, iter_image_paths
from ferkit.results import CSV_BASE_COLUMNS, ImageResult

MAX_NAME_BYTES = 240
"""Longest annotated file name: NAME_MAX (255 bytes on Linux, macOS, Windows) less room for atomic_write's '.tmp'."""


@dataclass
class AnalyzeSummary:
    images: int = 0
    faces: int = 0
    skipped_done: int = 0
    failed: list[str] = field(default_factory=list)
    results: list[ImageResult] = field(default_factory=list)
    """This run's results; with an output folder, every valid result in it (earlier runs' included)."""
    sources: list[str] = field(default_factory=list)
    """The sources this run was given (resolved, each once, in order), whether done now, earlier or failed."""


@dataclass
class _Input:
    source: str
    """Absolute path, symlinks resolved: the file's identity and the ``source`` shown."""
    listed: Path
    """The path as the listing found it (names the annotated image)."""
    key: list[int]
    """[size, mtime_ns] before the file was read: a file that changes while it is analysed is redone next time."""


def write_csv(path: Path, results: Iterable[ImageResult], labels: list[str]) -> None:
    """One row per face, a column per emotion (atomic)."""
    atomic_write_csv(path, CSV_BASE_COLUMNS + labels, (row for r in results for row in r.rows()))


def write_json(path: Path, results: Iterable[ImageResult]) -> None:
    """A JSON list of results (atomic; ASCII, so a file name that is not UTF-8 is kept as a \\udcXX escape)."""
    payload = [r.to_dict() for r in results]
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8"))


def list_inputs(paths: Sequence[str | os.PathLike], on_error: Callable[[str], None]) -> list[_Input]:
    """Every image file the paths name, each once (by resolved path), with its size and mtime; a path that cannot
    be stat'ed or is no regular file (a FIFO would block the decoder) is reported through ``on_error``, left out."""
    inputs, seen = [], set()
    for listed in iter_image_paths(paths):
        source = os.path.realpath(listed)
        if source in seen:
            continue
        seen.add(source)
        try:
            if not stat.S_ISREG(os.stat(source).st_mode):
                on_error(f"{source}: not a regular file")
                continue
            key = file_key(source)
        except FileNotFoundError:
            on_error(f"{source}: no such file")
            continue
        except OSError as exc:
            on_error(f"{source}: cannot read ({exc.strerror or exc})")
            continue
        inputs.append(_Input(source, listed, key))
    return inputs


def _readable_stem(listed: Path, roots: list[Path]) -> str:
    """'sub__dir__photo' for a file under a folder given on the command line, else the file's stem."""
    for root in roots:
        if root in listed.parents:
            return "__".join(listed.relative_to(root).with_suffix("").parts)
    return listed.stem


def annotated_name(stem: str, source: str, taken: set[str]) -> str:
    """``stem.jpg``, or ``stem-<hash of source>.jpg`` when that name is taken by another file (photo.jpg and
    photo.png; a name in two folders) or too long for the file system (the stem then cut to fit). Adds it to
    ``taken`` (compared case-insensitively, for macOS and Windows file systems)."""
    name = stem + ".jpg"
    if name.casefold() in taken or len(os.fsencode(name)) > MAX_NAME_BYTES:
        digest = hashlib.sha1(os.fsencode(source)).hexdigest()[:10]
        cut = os.fsencode(stem)[: MAX_NAME_BYTES - len(digest) - 5].decode("utf-8", "ignore")
        name = f"{cut}-{digest}.jpg"
    taken.add(name.casefold())
    return name


def _write_annotated(target: Path, image, result: ImageResult) -> None:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(annotate(image, result), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError("JPEG encoding failed")
    atomic_write(target, lambda tmp: tmp.write_bytes(jpeg.tobytes()))


def run_analysis(paths: Sequence[str | os.PathLike], recognizer: Recognizer, journal: Journal | None = None,
                 annotated: bool = True, on_error: Callable[[str], None] | None = None,
                 progress: bool = True) -> AnalyzeSummary:
    """Analyze files and folders; with a journal (see :func:`ferkit.journal.open_journal`), skip what it holds, add
    what is done, write annotated images, results.json and faces.csv into its folder."""
    from tqdm import tqdm

    summary = AnalyzeSummary()

    def fail(message: str) -> None:
        summary.failed.append(message)
        if on_error:
            on_error(message)

    inputs = list_inputs(paths, fail)
    summary.sources = [i.source for i in inputs]
    annotated = annotated and journal is not None
    todo = []
    for inp in inputs:
        rec = journal.records.get(inp.source) if journal else None
        if journal and journal.is_done(inp.source, inp.key) and (rec.get("annotated") or not annotated):
            summary.skipped_done += 1
        else:
            todo.append(inp)
    names: dict[str, str] = {}
    if annotated:
        (journal.out_dir / ANNOTATED).mkdir(exist_ok=True)
        taken = {r["annotated"].casefold() for r in journal.records.values() if r.get("annotated")}
        roots = [Path(p) for p in paths if os.path.isdir(p)]
        names = {i.source: annotated_name(_readable_stem(i.listed, roots), i.source, taken) for i in todo}

    bar = tqdm(total=len(todo), disable=not progress or len(todo) < 2, desc="analyze", unit="img")
    results = recognizer.analyze_with_images(i.source for i in todo)
    for inp, (result, image) in zip(todo, results, strict=True):
        bar.update(1)
        if result.error:
            fail(result.error)
            continue
        if journal is None:
            summary.results.append(result)
        else:
            rec = result.to_dict() | {"file_key": inp.key}
            if annotated and image is not None:
                try:
                    _write_annotated(journal.out_dir / ANNOTATED / names[inp.source], image, result)
                except OSError as exc:
                    fail(f"{inp.source}: could not write its annotated image ({exc})")
                    continue
                rec["annotated"] = names[inp.source]
            journal.add(rec)
        summary.images += 1
        summary.faces += len(result.faces)
    bar.close()
    if journal is not None:
        summary.results = [ImageResult.from_dict(r) for r in journal.records.values()]
        write_json(journal.out_dir / "results.json", summary.results)
        write_csv(journal.out_dir / "faces.csv", summary.results, recognizer.labels)
    return summary


def analyze_paths(paths: Sequence[str | os.PathLike], recognizer: Recognizer, out: str | os.PathLike | None = None,
                  annotated: bool = True, on_error: Callable[[str], None] | None = None,
                  progress: bool = True, force: bool = False) -> AnalyzeSummary:
    """Analyze files and folders; with ``out``, write journal, JSON, CSV and annotated images there (resumable).

    Raises UserInputError when ``out`` is in use by another run, or holds results made with other settings and
    ``force`` is not set (``force`` drops them and starts over).
    """
    if out is None:
        return run_analysis(paths, recognizer, None, annotated, on_error, progress)
    with open_journal(out, recognizer_settings(recognizer), force) as journal:
        return run_analysis(paths, recognizer, journal, annotated, on_error, progress)
