"""Time fer's face detection alone on photos; run by benchmarks/detectors.py in fer's own environment.

    /work/venv-fer/bin/python benchmarks/fer_detect_runner.py --threads 2

What ``FER(mtcnn=False).detect_emotions(path)`` does before classifying: ``cv2.imread`` (fer's ``load_image``), gray
conversion and ``find_faces`` (OpenCV's Haar cascade with fer's settings: scale 1.1, 5 neighbours, min face 50 px,
on the full-resolution image). A server on stdin/stdout, one JSON object per line, so detectors.py can time fer on a
photo right beside ferkit on the same photo (on a busy machine the load changes within seconds):

- ``{"photo": PATH, "repeat": N}`` -> ``{"ms": [N timings], "boxes": [...]}`` (boxes of a warm-up call first);
- ``{"folder": [PATHS], "repeat": N}`` -> ``{"seconds": [N passes over the photos, one after another]}``;
- the first line it prints, before reading any, is ``{"fer": version, "opencv": version, "threads": n}``.

Imports nothing from ferkit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=os.cpu_count())
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

    def reply(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"fer": fer.__version__, "opencv": cv2.__version__, "threads": a.threads})
    for line in sys.stdin:
        req = json.loads(line)
        if "photo" in req:
            boxes = faces(req["photo"])  # warm-up call; its boxes are the result we report
            runs = []
            for _ in range(req["repeat"]):
                t = time.perf_counter()
                faces(req["photo"])
                runs.append(1000 * (time.perf_counter() - t))
            reply({"ms": runs, "boxes": [[int(v) for v in b] for b in boxes]})
        else:
            passes = []
            for _ in range(req["repeat"]):
                t = time.perf_counter()
                for path in req["folder"]:
                    faces(path)
                passes.append(time.perf_counter() - t)
            reply({"seconds": passes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
