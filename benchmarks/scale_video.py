"""`ferkit video --engine ray` throughput with 1 and 2 Ray workers beside the single-process run, and how far the
stitched results are from the single-process ones -> results/scale_video.json (rendered by render.py).

    python benchmarks/scale_video.py [--seconds 20] [--segment-seconds 10] [--overlap-seconds 2]

Video: a real group photo (3 people, ../shared/data/photos) panned for a third of --seconds, a cut to a portrait of
a 4th person, a cut back to the group (tests/video_clips.group_cut_return), 640x360 at 30 fps, MJPG. Each run writes
every output (frames.csv ... annotated.mp4) as `ferkit video VIDEO --out DIR [--engine ray]` does. Ray: a local
cluster with --num-cpus N started before the clock starts (workers load their models inside the timed run, as
they do in a real one); fps = frames / wall seconds of the run. The agreement columns compare the 2-worker output
with the single-process output face by face (tests/test_scale_video.compare).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])

PHOTOS = REPO.parent / "shared" / "data" / "photos"
SPEC = {"model": "default", "detector": "auto", "min_face": 0, "tta": "flip"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--segment-seconds", type=float, default=10.0)
    p.add_argument("--overlap-seconds", type=float, default=2.0)
    p.add_argument("--out", default=str(HERE / "results" / "scale_video.json"))
    a = p.parse_args(argv)

    from ferkit.recognizer import Recognizer
    from ferkit.scale.cluster import ray_session
    from ferkit.scale.video import run_videos_on_ray
    from ferkit.video import VideoOptions
    from tests.test_scale_video import compare
    from tests.video_clips import group_cut_return, write_video

    command = "python benchmarks/scale_video.py " + " ".join(argv if argv is not None else sys.argv[1:])
    third = int(a.seconds * 30 / 3)
    recognizer = Recognizer(workers=1)
    data: dict = {"command": command.strip(), "seconds": a.seconds, "segment_s": a.segment_seconds,
                  "overlap_s": a.overlap_seconds, "rows": [],
                  "environment": f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores",
                  "load_average_at_start": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = write_video(tmp / "group.avi", group_cut_return(PHOTOS, third, third, third))
        recognizer.analyze_video(video).result()  # warm-up: model sessions, dlib, PyAV
        t = time.perf_counter()
        single = recognizer.analyze_video(video, out=tmp / "single").result()
        wall = time.perf_counter() - t
        data["frames"] = single.frames
        data["rows"].append({"engine": "local (one process)", "workers": 1, "wall_s": round(wall, 1),
                             "fps": round(single.frames / wall, 2), "people": len(single.people)})
        print(data["rows"][-1], file=sys.stderr)
        for workers in (1, 2):
            with ray_session(None, "benchmark", num_cpus=workers):
                t = time.perf_counter()
                s = run_videos_on_ray([video], recognizer, SPEC, tmp / f"ray{workers}", VideoOptions(),
                                      a.segment_seconds, a.overlap_seconds, progress=False)
                wall = time.perf_counter() - t
            r = s.results[0]
            timings = r.settings["timings_s"]
            row = {"engine": "ray", "workers": workers, "wall_s": round(wall, 1), "fps": round(r.frames / wall, 2),
                   "people": len(r.people), "segments": r.settings["segments"],
                   "driver_s": round(timings.get("decode", 0) + timings.get("write", 0), 1)}
            if workers == 2:
                stats = compare(tmp / "single", tmp / f"ray{workers}", recognizer.labels)
                row["agreement"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
            data["rows"].append(row)
            print(row, file=sys.stderr)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
