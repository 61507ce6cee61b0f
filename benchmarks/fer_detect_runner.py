"""Time fer's face detection alone on photos; run by benchmarks/detectors.py in fer's own environment.

    /work/venv-fer/bin/python benchmarks/fer_detect_runner.py --threads 2 --repeat 3 photo1.jpg photo2.png ...

What ``FER(mtcnn=False).detect_emotions(path)`` does before classifying: ``cv2.imread`` (fer's ``load_image``), gray
conversion and ``find_faces`` (OpenCV's Haar cascade with fer's settings: scale 1.1, 5 neighbours, min face 50 px,
on the full-resolution image). Prints one JSON object: per photo the ms of each timed call and the boxes of the
warm-up call, and the seconds of each pass over all the photos, one after another. Imports nothing from ferkit.
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
    a = p.parse_args()

    import cv2

    cv2.setNumThreads(a.threads)
    import fer
    from fer.fer import FER
    from fer.utils import load_image

    detector = FER(mtcnn=False)

    def faces(path: str) -> list:
        img = load_image(path)
        return detector.find_faces(img, bgr=True, gray_img=cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))

    photos = {}
    for path in a.photos:
        boxes = faces(path)  # warm-up call; its boxes are the result we report
        runs = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            faces(path)
            runs.append(1000 * (time.perf_counter() - t))
        photos[path] = {"ms": runs, "boxes": [[int(v) for v in b] for b in boxes]}
    folder_seconds = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        for path in a.photos:
            faces(path)
        folder_seconds.append(time.perf_counter() - t)
    json.dump({"fer": fer.__version__, "opencv": cv2.__version__, "threads": a.threads, "repeat": a.repeat,
               "photos": photos, "folder_seconds": folder_seconds}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
