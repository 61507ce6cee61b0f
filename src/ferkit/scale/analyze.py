"""`ferkit analyze --engine ray`: the single-process analysis, spread over a Ray cluster with Ray Data.

Why this shape: detection is ~95% of the work and needs no model, so it runs in stateless ``map_batches`` CPU tasks
(as many at once as the cluster has CPUs); classification needs the model, so it runs in an actor pool (one
``load_classifier`` per actor, every face of a batch of images in one ONNX call), which is where a GPU node would
go. Both stages are the single-process code itself (:func:`ferkit.recognizer.detect_and_crop` and
:func:`ferkit.recognizer.classify_pending`), so a file gives the same faces, boxes and probabilities in both engines.

The driver (this process) streams results out of the pipeline and keeps the same journal as single-process analyze
(``DEST/results.jsonl``, :mod:`ferkit.journal`): one line per finished image, the settings on the first line (another
model, detector, min_face, max_faces or tta is refused; ``force`` starts over), the folder locked for the run. A
rerun skips every file whose size and mtime are unchanged. At the end it writes, atomically, from the journal:

- ``DEST/faces.parquet`` and ``DEST/faces.jsonl``: the per-face table of single-process ``faces.csv`` (``source,
  face, x, y, w, h, emotion, confidence, group`` and a column per label), sorted by source and face, plus an
  ``error`` column; an image without faces has one row with only its ``source``, a file that failed (corrupt, not
  an image, unreadable) one row with its ``error``. Failed files are retried by the next run, as in single-process.

The driver holds one small record per image (as single-process analyze does); the images themselves only ever exist
inside the tasks, and Ray Data's streaming executor bounds how many are in flight.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before the imports below: what loading ferkit costs a fresh Ray worker process

import functools
import json
import logging
import math
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.classify import CropSpec, load_classifier
from ferkit.errors import UserInputError
from ferkit.io import MemoryBudget, atomic_write
from ferkit.journal import open_journal, recognizer_settings
from ferkit.recognizer import Pending, Recognizer, classify_pending, detect_and_crop
from ferkit.results import CSV_BASE_COLUMNS, ImageResult
from ferkit.runtime import DEFAULT_TTA
from ferkit.scale.sources import Input, is_uri, key_of, list_sources, read_bytes

log = logging.getLogger(__name__)

IMPORT_SECONDS = time.perf_counter() - _T0
"""Seconds this module's imports took in this process (Python modules of ferkit, NumPy, OpenCV, ONNX Runtime, PIL
that were not loaded yet): in a Ray worker, the start-up cost its first task pays."""

PARQUET = "faces.parquet"
JSONL = "faces.jsonl"
STAGES = ("decode", "detect", "align_crop", "classify", "detector_load", "model_load", "worker_import")
DECODE_BYTES = 512 << 20
"""Each detection process's budget for full-size decodes (single-process analyze's ``decode_bytes``); every
detection task also reserves this much of Ray's ``memory`` resource, so a node runs no more of them than its memory
holds. Declaring it also keeps Ray Data from fusing the tasks into the classifier actors (operators fuse only when
their resource requests match), which would run detection inside the few actors instead of on every CPU."""
WRITE_ROWS = 10_000
"""Rows per Parquet row group / per chunk held while the final table is written."""


@dataclass(frozen=True)
class DetectSpec:
    """What a detection task needs (plain and picklable): the detector by name, the classifier's crop specs and the
    Recognizer's bounds, so a task crops exactly as the driver's Recognizer would without loading the model."""

    detector: str
    crop_specs: tuple[CropSpec, ...]
    max_side: int
    min_face: int
    max_faces: int | None
    model_name: str


@dataclass
class RayAnalyzeSummary:
    images: int = 0
    """Images analysed by this run (not counting skipped or failed ones)."""
    faces: int = 0
    skipped_done: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(source, one-line error) of every file that failed in this run."""
    seconds: float = 0.0
    """Wall time of the pipeline and the final write (Ray start-up excluded)."""
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES + ("write",), 0.0))
    """Seconds summed over tasks and actors per stage (CPU-side work, not wall time), and the driver's writes."""
    out: Path | None = None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        return (f"{self.images:,} images, {self.faces:,} faces, {len(self.errors):,} errors"
                + (f", {self.skipped_done:,} already done" if self.skipped_done else "")
                + f", {self.seconds:.1f} s, {self.images_per_s:.2f} images/s; results in {self.out}")


# ---------------------------------------------------------------------------------------------------------------
# The two stages, as they run on the cluster.




def _once(name: str, value: float) -> float:
    """``value`` the first time ``name`` is asked for in this process, 0 after."""
    if name in _REPORTED:
        return 0.0
    _REPORTED.add(name)
    return value


_REPORTED: set[str] = set()


@functools.lru_cache(maxsize=4)
def _detector(name: str):
    """One detector per worker process (Ray reuses workers, so the models load once per process)."""
    from ferkit.faces import get_detector

    return get_detector(name)


@functools.cache
def _budget() -> MemoryBudget:
    return MemoryBudget(DECODE_BYTES)


def detect_batch(batch: dict[str, np.ndarray], spec: DetectSpec) -> dict[str, np.ndarray]:
    """Ray task: decode, detect and crop each image of a batch; a file that fails is a result with its error."""
    t0 = time.perf_counter()
    loaded = _detector.cache_info().currsize
    detector = _detector(spec.detector)
    load = time.perf_counter() - t0 if _detector.cache_info().currsize > loaded else 0.0
    pending = []
    for source in batch["source"]:
        source = str(source)
        data: str | bytes = source
        if is_uri(source):
            try:
                data = read_bytes(source)
            except OSError as exc:
                pending.append(_failed(source, f"{source}: cannot read ({str(exc).splitlines()[0]})"))
                continue
        pending.append(detect_and_crop(data, detector, spec.crop_specs, spec.max_side, spec.min_face,
                                       spec.max_faces, spec.model_name, _budget(), name=source))
    loads, starts = np.zeros(len(pending)), np.zeros(len(pending))
    if len(pending):
        loads[0], starts[0] = load, _once("detect", IMPORT_SECONDS)
    return {"source": batch["source"], "size": batch["size"], "mtime_ns": batch["mtime_ns"],
            "pending": np.array([pickle.dumps(p) for p in pending], dtype=object), "detector_load": loads,
            "worker_import": starts}


def _failed(source: str, error: str) -> Pending:
    return Pending(ImageResult(source, 0, 0, [], error=error), None, [], {})


class Classify:
    """Ray actor: one classifier, loaded once; each call classifies the faces of a batch of images together."""

    def __init__(self, model: str, tta: str, digest: str) -> None:
        t0 = time.perf_counter()
        self.classifier = load_classifier(model, tta=tta)
        if self.classifier.digest() != digest:
            raise UserInputError(f"model {model!r} on this Ray node differs from the driver's (digest "
                                 f"{self.classifier.digest()}, not {digest}); install the same ferkit and model "
                                 "package on every node, or pass a package folder on shared storage")
        self.load = time.perf_counter() - t0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pending = [pickle.loads(b) for b in batch["pending"]]
        t0 = time.perf_counter()
        classify_pending(self.classifier, [p for p in pending if not p.result.error])
        seconds = np.zeros((len(pending), len(STAGES)))
        for i, p in enumerate(pending):
            for stage, s in p.seconds.items():
                seconds[i, STAGES.index(stage)] = s
        if len(pending):
            seconds[0, STAGES.index("classify")] = time.perf_counter() - t0
            seconds[0, STAGES.index("model_load")], self.load = self.load, 0.0
        out = {"source": batch["source"], "size": batch["size"], "mtime_ns": batch["mtime_ns"],
               "record": np.array([json.dumps(p.result.to_dict()) for p in pending], dtype=object)}
        seconds[:, STAGES.index("detector_load")] = batch["detector_load"]
        seconds[:, STAGES.index("worker_import")] = batch["worker_import"]
        if len(pending):
            seconds[0, STAGES.index("worker_import")] += _once("classify", IMPORT_SECONDS)
        out.update({stage: seconds[:, i] for i, stage in enumerate(STAGES)})
        return out


# ---------------------------------------------------------------------------------------------------------------
# The driver.


def _key_of(listed: dict[str, tuple[int, int]]) -> Callable[[str], list[int]]:
    """A journal record's current [size, mtime_ns]: from this run's listing when the file is in it (no second stat
    of a remote object), else asked of its filesystem."""
    return lambda source: list(listed[source]) if source in listed else key_of(source)


def analyze_on_ray(paths: Sequence[str], out: str | Path, model: str = "default", detector: str = "auto",
                   min_face: int = 0, max_faces: int | None = None, tta: str = DEFAULT_TTA, force: bool = False,
                   workers: int | None = None, actors: int = 1, actor_options: dict[str, Any] | None = None,
                   detect_batch_size: int = 4, classify_batch_size: int = 16,
                   on_error: Callable[[str], None] | None = None) -> RayAnalyzeSummary:
    """Analyze files, folders, URIs and manifests on the Ray cluster this process is connected to (see
    :func:`ferkit.scale.cluster.ray_session`), writing into the local folder ``out``.

    workers: detection tasks at once (default: as many as the cluster's free CPUs allow). actors: classifier
    actors (1 CPU each unless ``actor_options`` says otherwise, e.g. ``{"num_gpus": 1}`` or
    ``{"num_cpus": 0.5, "resources": {"model": 1}}``: Ray resource requests that place them on the nodes meant for
    the model). Raises UserInputError when nothing is listed, when ``out`` is locked by another run, or holds
    results of other settings and ``force`` is not set.
    """
    import ray

    started = time.perf_counter()
    summary = RayAnalyzeSummary(out=Path(out))

    def fail(source: str, message: str) -> None:
        summary.errors.append((source, message))
        if on_error:
            on_error(message)

    inputs = list_sources(list(paths), lambda message: fail(message.split(": ", 1)[0], message))
    if not inputs and not summary.errors:
        raise UserInputError(f"no image files in {', '.join(paths)}")
    with Recognizer(model, detector, min_face=min_face, max_faces=max_faces, tta=tta, workers=1) as recognizer:
        settings = recognizer_settings(recognizer)
        spec = DetectSpec(recognizer.detector.name, tuple(recognizer.classifier.crop_specs), recognizer.max_side,
                          min_face, max_faces, recognizer.model_name)
        labels = list(recognizer.labels)
    # a shipped name resolves on each node in its own ferkit; a package folder by its absolute path (Ray's workers
    # run in a session folder of their own, so a relative path would name nothing there)
    model_arg = os.path.abspath(model) if os.path.exists(model) else model
    listed = {i.source: i.key for i in inputs}
    with open_journal(out, settings, force, key_of=_key_of(listed)) as journal:
        todo = [i for i in inputs if not journal.is_done(i.source, list(i.key))]
        summary.skipped_done = len(inputs) - len(todo)
        for row in _run_pipeline(ray, todo, spec, model_arg, tta, settings["model_digest"], workers, actors,
                                 actor_options or {}, detect_batch_size, classify_batch_size):
            for stage in STAGES:
                summary.stages[stage] += float(row[stage])
            record = json.loads(row["record"])
            if record.get("error"):
                fail(record["source"], record["error"])
                continue
            t0 = time.perf_counter()
            journal.add(record | {"file_key": [int(row["size"]), int(row["mtime_ns"])]})
            summary.stages["write"] += time.perf_counter() - t0
            summary.images += 1
            summary.faces += len(record["faces"])
        t0 = time.perf_counter()
        write_tables(Path(out), journal.records.values(), summary.errors, labels)
        summary.stages["write"] += time.perf_counter() - t0
    summary.seconds = time.perf_counter() - started
    return summary


def _run_pipeline(ray, todo: list[Input], spec: DetectSpec, model: str, tta: str, digest: str,
                  workers: int | None, actors: int, actor_options: dict[str, Any], detect_batch_size: int,
                  classify_batch_size: int) -> Iterator[dict[str, Any]]:
    """The rows of finished images, as the pipeline produces them (in no particular order)."""
    if not todo:
        return
    items = [{"source": i.source, "size": i.key[0], "mtime_ns": i.key[1]} for i in todo]
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / detect_batch_size)))
    ds = ds.map_batches(detect_batch, fn_kwargs={"spec": spec}, batch_size=detect_batch_size, num_cpus=1,
                        memory=DECODE_BYTES, compute=ray.data.TaskPoolStrategy(size=workers) if workers else None)
    options = {"num_cpus": 1} | actor_options
    ds = ds.map_batches(Classify, fn_constructor_kwargs={"model": model, "tta": tta, "digest": digest},
                        batch_size=classify_batch_size, compute=ray.data.ActorPoolStrategy(size=actors), **options)
    yield from ds.iter_rows()


# ---------------------------------------------------------------------------------------------------------------
# The output tables.


def columns(labels: Sequence[str]) -> list[str]:
    """faces.csv's columns (single-process analyze) plus ``error``."""
    return CSV_BASE_COLUMNS + list(labels) + ["error"]


def table_rows(records: Iterator[dict[str, Any]] | Sequence[dict[str, Any]], errors: Sequence[tuple[str, str]],
               labels: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Every row of the output table, sorted by source then face: each face of each journal record (exactly
    faces.csv's rows), one row with only ``source`` for an image without faces, one row with ``error`` per failure."""
    names = columns(labels)
    empty = dict.fromkeys(names)
    items = [(r["source"], r, None) for r in records] + [(s, None, e) for s, e in errors]
    for source, record, error in sorted(items, key=lambda t: (t[0], t[2] or "")):
        if error is not None:
            yield empty | {"source": source, "error": error}
            continue
        rows = ImageResult.from_dict(record).rows()
        if not rows:
            yield empty | {"source": source}
        for row in rows:
            yield empty | row


def _schema(labels: Sequence[str]):
    import pyarrow as pa

    types = {"source": pa.string(), "face": pa.int64(), "x": pa.int64(), "y": pa.int64(), "w": pa.int64(),
             "h": pa.int64(), "emotion": pa.string(), "confidence": pa.float64(), "group": pa.string(),
             "error": pa.string()}
    return pa.schema([(name, types.get(name, pa.float64())) for name in columns(labels)])


def _chunks(rows: Iterator[dict[str, Any]], n: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_tables(out: Path, records, errors: Sequence[tuple[str, str]], labels: Sequence[str]) -> None:
    """``faces.parquet`` and ``faces.jsonl`` (each atomic), written a chunk of rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = list(records)
    schema = _schema(labels)

    def parquet(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in _chunks(table_rows(records, errors, labels), WRITE_ROWS):
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))

    def jsonl(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in table_rows(records, errors, labels):
                f.write(json.dumps(row) + "\n")

    atomic_write(out / PARQUET, parquet)
    atomic_write(out / JSONL, jsonl)
