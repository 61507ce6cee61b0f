"""Time fer's ``Video.analyze`` on a video; run by benchmarks/video_speed.py in fer's own environment.

    /work/venv-fer/bin/python benchmarks/fer_video_runner.py --threads 2 clip.mp4

fer's documented video use: ``Video(path).analyze(FER(mtcnn=False), display=False)`` (Haar cascade + mini-Xception
on every ``--frequency``-th frame, results kept in memory), writing what ferkit writes: an annotated video and the
per-frame table (``save_video=True``, ``output="csv"``), not fer's default JPEG of every frame
(``save_frames=False``, ``zip_images=False``), which would be slower and not comparable. Prints one JSON object:
frames, seconds, fps, peak RSS. Must import nothing from ferkit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("video")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--frequency", type=int, default=1)
    a = p.parse_args()

    import cv2

    cv2.setNumThreads(a.threads)
    # fer's environment has opencv-python-headless (as speed.py's recipe installs it); Video.analyze ends with
    # cv2.destroyAllWindows() and cv2.waitKey(), which a headless build does not implement: make them the no-ops
    # they are without windows
    cv2.destroyAllWindows = lambda: None
    cv2.waitKey = lambda *args: -1
    from fer.classes import Video
    from fer_threads import fer_detector

    detector = fer_detector(a.threads)
    cap = cv2.VideoCapture(a.video)
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    with tempfile.TemporaryDirectory() as tmp:
        video = Video(a.video, outdir=tmp)
        t = time.perf_counter()
        data = video.analyze(detector, display=False, frequency=a.frequency, save_frames=False, save_video=True,
                             annotate_frames=True, zip_images=False, output="pandas")
        seconds = time.perf_counter() - t
    json.dump({"frames": frames, "seconds": seconds, "fps": frames / seconds, "rows": len(data),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "fer_version": __import__("fer").__version__}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
