"""Time the `fer` package (justinshenk/fer) on photos; run by benchmarks/speed.py in fer's own environment.

    /work/venv-fer/bin/python benchmarks/fer_runner.py --threads 2 --repeat 3 photo1.jpg photo2.png ...

fer's default pipeline: ``FER(mtcnn=False).detect_emotions(path)``: cv2.imread, OpenCV Haar cascade (scale 1.1,
5 neighbours, min face 50 px), 64x64 gray crops with 10 px offsets, the bundled quantised mini-Xception through the
TensorFlow Lite interpreter (one face per invoke). fer creates its interpreter without a thread count; to give both
tools the same threads, this script puts an interpreter with ``num_threads=--threads`` into fer's own class-level
cache (``FER._tflite_interpreter_cache``) before constructing FER, and sets OpenCV's threads.

Prints one JSON object on stdout: per photo the timed ms of each run and the boxes of the warm-up run, the seconds
of each timed pass over all the photos (one call per photo, in order: fer has no batch API), plus
classification-only throughput of fer's classifier (``FER._classify_emotions``) on its own crops of the photos.
This file must import nothing from ferkit (fer's environment does not have it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("photos", nargs="+")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batches", default="1,256")
    p.add_argument("--min-seconds", type=float, default=1.0)
    a = p.parse_args()

    import cv2
    import numpy as np

    cv2.setNumThreads(a.threads)
    import fer
    import tensorflow as tf
    from fer.fer import FER, PADDING
    from fer_threads import fer_detector

    t0 = time.perf_counter()
    detector = fer_detector(a.threads)
    load_s = time.perf_counter() - t0

    photos = {}
    crops = []
    for path in a.photos:
        faces = detector.detect_emotions(path)  # warm-up run; its boxes are the result we report
        runs = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            detector.detect_emotions(path)
            runs.append(1000 * (time.perf_counter() - t))
        photos[path] = {"ms": runs, "boxes": [[int(v) for v in f["box"]] for f in faces],
                        "emotions": [max(f["emotions"], key=f["emotions"].get) for f in faces]}
        # the classifier's input for these faces, made as detect_emotions makes it (square box, 10 px offsets)
        gray = FER.pad(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2GRAY))
        for f in faces:
            x, y, w, h = FER.tosquare(tuple(int(v) for v in f["box"]))
            x1, y1 = max(0, x - 10 + PADDING), max(0, y - 10 + PADDING)
            crop = gray[y1:y + h + 10 + PADDING, x1:x + w + 10 + PADDING]
            crops.append(cv2.resize(crop, (64, 64)).astype(np.float32) / 127.5 - 1.0)

    folder_seconds = []  # the whole list of photos, one call after another (fer has no batch API)
    for _ in range(a.repeat):
        t = time.perf_counter()
        for path in a.photos:
            detector.detect_emotions(path)
        folder_seconds.append(time.perf_counter() - t)

    classify = []
    if crops:
        for batch in (int(b) for b in a.batches.split(",")):
            x = np.stack([crops[i % len(crops)] for i in range(batch)])
            detector._classify_emotions(x)  # warm-up
            calls, t, elapsed = 0, time.perf_counter(), 0.0
            while calls < 3 or elapsed < a.min_seconds:
                detector._classify_emotions(x)
                calls += 1
                elapsed = time.perf_counter() - t
            classify.append({"batch": batch, "calls": calls, "ms_per_batch": 1000 * elapsed / calls,
                             "faces_per_s": batch * calls / elapsed})

    json.dump({"fer": fer.__version__, "tensorflow": tf.__version__, "opencv": cv2.__version__,
               "threads": a.threads, "repeat": a.repeat, "load_seconds": load_s, "photos": photos,
               "folder_seconds": folder_seconds, "classify": classify}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
