"""`ferkit bench`: how fast the pipeline is on your photos and your machine, stage by stage.

Three measurements, all with the models and settings a user would run:

1. per photo (one photo per call, as a server answering requests would): decode, detect, align+crop and classify
   times from the Recognizer's own stage timers, and end-to-end ms per photo (median of ``repeat`` runs of each
   photo; then p50/p90/mean over photos), faces/s end to end;
2. folder (all photos in one call, as ``ferkit analyze`` does: images decoded and detected in parallel threads
   when the detector allows it, faces of 16 images classified per model call): images/s and faces/s;
3. classification only: batches of real face crops (the photos' own, repeated to fill the batch) through
   the classifier (preprocessing + ONNX Runtime + its TTA), faces/s per batch size, up to MAX_BATCH faces per batch.

One warm-up pass over the photos comes first and is not counted; it also finds the unreadable files. Photos are
streamed, never all held: memory does not grow with their number (tests/test_memory.py).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ferkit.classify import Classifier, Crops, FaceCrops, n_faces
from ferkit.errors import UserInputError
from ferkit.recognizer import Recognizer, iter_image_paths

STAGES = ("decode", "detect", "align_crop", "classify")
STAGE_NAMES = {"decode": "decode", "detect": "detect", "align_crop": "align + crop", "classify": "classify"}
MAX_BATCH = 4096
"""Largest classification-only batch: ONNX Runtime is called 256 crops at a time (Classifier.batch_size), so a
larger batch measures the same faces/s, only for longer (--batches 100000 would take minutes)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


@dataclass
class BenchReport:
    model: str
    detector: str
    threads: int | None
    tta: str
    photos: int
    repeat: int
    faces: int
    failed: list[str]
    stage_ms: dict[str, float]
    """Mean ms per photo of each stage (one photo per call)."""
    photo_ms: dict[str, float]
    """End-to-end ms per photo: p50, p90, mean and max over photos of each photo's median over repeats."""
    faces_per_s: float
    images_per_s: float
    folder: dict[str, float]
    classify: list[dict[str, float]] = field(default_factory=list)
    machine: dict[str, str | int | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def machine_info() -> dict[str, str | int | None]:
    import onnxruntime

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__}


def face_crops(recognizer: Recognizer, files: Sequence[str | os.PathLike], limit: int) -> FaceCrops | list[np.ndarray]:
    """Up to ``limit`` faces as the classifier sees them (cropped once per crop spec it needs), from the photos in
    turn, each decoded at the Recognizer's working size and released before the next. When no photo has a face,
    centre crops of the photos stand in (given to every crop spec), so the model can still be timed."""
    from ferkit.io import read_image

    specs = recognizer.classifier.crop_specs
    crops: FaceCrops = {spec: [] for spec in specs}
    centres: list[np.ndarray] = []
    for f in files:
        image = read_image(f, "rgb", recognizer.max_side)
        for spec, faces in recognizer.classifier.crop(image, recognizer.detector.detect(image)).items():
            crops[spec].extend(faces)
        if n_faces(crops) >= limit:
            break
        if not n_faces(crops) and len(centres) < 16:
            side = min(image.shape[:2])
            centres.append(image[:side, :side].copy())
    return {spec: faces[:limit] for spec, faces in crops.items()} if n_faces(crops) else centres


def classify_throughput(classifier: Classifier, crops: Crops, batch: int, min_seconds: float = 1.0,
                        min_calls: int = 3) -> dict[str, float]:
    """faces/s of ``classifier.predict_proba`` on batches of ``batch`` faces (cycled from ``crops``: a list, or a
    FaceCrops dict of one list per crop spec), timed over at least ``min_calls`` calls and ``min_seconds`` seconds
    after one warm-up call. Includes preprocessing (resize, normalise), the classifier's TTA and softmax, as in real
    use."""
    n = n_faces(crops)
    if not n:
        raise ValueError("no face crops to classify")

    def cycled(faces: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [faces[i % n] for i in range(batch)]

    data = {s: cycled(f) for s, f in crops.items()} if isinstance(crops, dict) else cycled(crops)
    classifier.predict_proba(data)  # warm-up
    calls, t0 = 0, time.perf_counter()
    elapsed = 0.0
    while calls < min_calls or elapsed < min_seconds:
        classifier.predict_proba(data)
        calls += 1
        elapsed = time.perf_counter() - t0
    return {"batch": batch, "calls": calls, "ms_per_batch": 1000 * elapsed / calls,
            "faces_per_s": batch * calls / elapsed}


def bench_paths(paths: Sequence[str | os.PathLike], recognizer: Recognizer, repeat: int = 3,
                batches: Sequence[int] = (1, 256), min_seconds: float = 1.0,
                progress: bool = False) -> BenchReport:
    """Time the pipeline on the photos in ``paths`` (files or folders); see the module docstring for what is timed.
    Unreadable files are listed in ``failed`` and left out of the timings."""
    from tqdm import tqdm

    if repeat < 1:
        raise UserInputError("repeat must be at least 1")
    if not batches or min(batches) < 1 or max(batches) > MAX_BATCH:
        raise UserInputError(f"batch sizes must be 1 to {MAX_BATCH} faces, not {','.join(map(str, batches))} "
                             f"(ONNX Runtime runs {recognizer.classifier.batch_size} at a time: a larger batch only "
                             "takes longer)")
    files, failed = [], []
    # the warm-up (files into the OS cache, the model's first call) also finds the unreadable files
    for result in tqdm(recognizer.analyze_iter(iter_image_paths(paths)), desc="warm-up", unit="img",
                       disable=not progress):
        if result.error:
            failed.append(result.error)
        else:
            files.append(result.source)
    if not files:
        raise UserInputError("no readable photo to benchmark" + (f" ({failed[0]})" if failed else ""))
    per_photo: list[float] = []
    stage_tot = dict.fromkeys(STAGES, 0.0)
    faces = 0
    bar = tqdm(total=len(files) * repeat, desc="bench", unit="img", disable=not progress)
    for f in files:
        runs = []
        for _ in range(repeat):
            recognizer.timings.clear()
            t0 = time.perf_counter()
            result = next(recognizer.analyze_iter([f]))
            runs.append(time.perf_counter() - t0)
            for s in STAGES:
                stage_tot[s] += recognizer.timings[s]
            bar.update(1)
        faces += len(result.faces)
        per_photo.append(statistics.median(runs))
    bar.close()
    n = len(files)
    photo_ms = {"p50": 1000 * percentile(per_photo, 50), "p90": 1000 * percentile(per_photo, 90),
                "mean": 1000 * statistics.mean(per_photo), "max": 1000 * max(per_photo)}
    stage_ms = {s: 1000 * stage_tot[s] / (n * repeat) for s in STAGES}

    recognizer.timings.clear()
    t0 = time.perf_counter()
    folder_faces = sum(len(r.faces) for r in recognizer.analyze_iter(files))
    folder_s = time.perf_counter() - t0
    folder = {"seconds": folder_s, "images_per_s": n / folder_s, "faces": folder_faces,
              "faces_per_s": folder_faces / folder_s, "images_per_batch": recognizer.images_per_batch,
              "workers": recognizer.workers}

    crops = face_crops(recognizer, files, max(batches))
    classify = [classify_throughput(recognizer.classifier, crops, b, min_seconds)
                for b in tqdm(batches, desc="classify", unit="batch size", disable=not progress)]

    return BenchReport(model=recognizer.model_name, detector=recognizer.detector.name,
                       threads=recognizer.classifier.threads, tta=recognizer.tta,
                       photos=n, repeat=repeat, faces=faces, failed=failed, stage_ms=stage_ms, photo_ms=photo_ms,
                       faces_per_s=faces / sum(per_photo), images_per_s=n / sum(per_photo), folder=folder,
                       classify=classify, machine=machine_info())


def format_report(r: BenchReport) -> str:
    """The report as a plain-text table."""
    threads = r.threads or f"all ({r.machine.get('cores')})"
    lines = [f"ferkit bench: model {r.model}, detector {r.detector}, TTA {r.tta}, ONNX Runtime threads {threads}",
             f"{r.photos} photos, {r.faces} faces, each photo run {r.repeat}x alone (median taken), after a warm-up",
             "", f"{'stage':<22}{'ms/photo':>10}{'share':>8}"]
    total = sum(r.stage_ms.values()) or 1.0
    for s in STAGES:
        lines.append(f"{STAGE_NAMES[s]:<22}{r.stage_ms[s]:>10.1f}{100 * r.stage_ms[s] / total:>7.0f}%")
    lines.append(f"{'sum of stages':<22}{sum(r.stage_ms.values()):>10.1f}")
    lines += ["", f"{'end to end, per photo':<22}{'p50':>10}{'p90':>10}{'mean':>10}{'max':>10}",
              (f"{'ms':<22}{r.photo_ms['p50']:>10.1f}{r.photo_ms['p90']:>10.1f}{r.photo_ms['mean']:>10.1f}"
               f"{r.photo_ms['max']:>10.1f}"),
              "",
              f"one photo per call:  {r.images_per_s:8.1f} photos/s  {r.faces_per_s:8.1f} faces/s",
              (f"folder ({r.folder['workers']} detection threads, {r.folder['images_per_batch']} images per model call): "
               f"{r.folder['images_per_s']:8.1f} photos/s"
               f"  {r.folder['faces_per_s']:8.1f} faces/s"), "",
              f"{'classification only':<22}{'batch':>8}{'ms/batch':>12}{'faces/s':>12}"]
    for c in r.classify:
        lines.append(f"{'':<22}{c['batch']:>8d}{c['ms_per_batch']:>12.2f}{c['faces_per_s']:>12.0f}")
    lines.append(f"(classification = preprocessing + ONNX Runtime + softmax on real face crops, TTA {r.tta})")
    return "\n".join(lines)
