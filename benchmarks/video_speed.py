"""End-to-end video speed (fps) of `ferkit video` vs fer's ``Video.analyze``, per stage, and memory vs video length
-> results/video_speed.md + video_speed.json.

    python benchmarks/video_speed.py [--seconds 10] [--stride 15] [--threads 2] [--short-seconds 10]
                                     [--long-seconds 600] [--fer-python /work/venv-fer/bin/python] [--skip-fer]

Clips (H.264 MP4s made here, so both tools decode the same file): ``720x480``: the shared clip
(../shared/data/videos/huimiang__1543684773.avi, one face, 2.2 s) looped to --seconds; ``640x360``: a slow pan and
zoom across a real group photo (3 faces, ../shared/data/photos/dlib__2008_001322.jpg) for --seconds, at 30 fps.

ferkit: ``VideoRun`` in this process as `ferkit video CLIP --out DIR` runs it (decode, detect, track, re-identify,
classify, write frames.csv, seconds.csv, annotated.mp4, summaries every 5 s and at the end), with the default
settings (detection and classification 5 times per second of video), with ``--classify-every-frame`` and with
``--stride``; fps = frames / wall seconds, per-stage fps = frames / seconds spent in the stage.
fer: benchmarks/fer_video_runner.py in fer's environment (see benchmarks/speed.py for how it is made), every frame
and every --stride-th frame (fer's ``frequency``).

Memory: `ferkit video` as a subprocess on the 720x480 clip looped to --short-seconds and to --long-seconds; peak RSS
of the process (tests/peak_rss.py). Then `python benchmarks/render.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.peak_rss import run_with_peak_rss  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
CLIP = SHARED / "videos" / "huimiang__1543684773.avi"
GROUP_PHOTO = SHARED / "photos" / "dlib__2008_001322.jpg"
DEFAULT_FER_PYTHON = "/work/venv-fer/bin/python"
AIM_REALTIME = 3.0
AIM_VS_FER = 2.0


def _encode(path: Path, frames, fps: float, size: tuple[int, int]) -> Path:
    """H.264 MP4 from RGB frames (PyAV)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def looped_clip(path: Path, seconds: float) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(CLIP))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    n = int(round(seconds * fps))
    return _encode(path, (frames[i % len(frames)] for i in range(n)), fps, (frames[0].shape[1], frames[0].shape[0]))


def group_pan_clip(path: Path, seconds: float, fps: float = 30.0) -> Path:
    import cv2
    import numpy as np

    photo = cv2.cvtColor(cv2.imread(str(GROUP_PHOTO)), cv2.COLOR_BGR2RGB)
    n = int(round(seconds * fps))

    def frames():
        for i in range(n):
            t = i / max(n - 1, 1)
            cx, zoom = 0.46 + 0.08 * t, 1.0 + 0.12 * t
            scale = zoom * max(640 / photo.shape[1], 360 / photo.shape[0])
            m = np.float32([[scale, 0, 320 - cx * photo.shape[1] * scale],
                            [0, scale, 180 - 0.52 * photo.shape[0] * scale]])
            yield cv2.warpAffine(photo, m, (640, 360), borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))
    return _encode(path, frames(), fps, (640, 360))


def run_ferkit(recognizer, clip: Path, out: Path, stride: int | None, every_frame: bool = False) -> dict:
    from ferkit.video import VideoOptions, VideoRun

    t = time.perf_counter()
    run = VideoRun(recognizer, clip, VideoOptions(stride=stride, classify_every_frame=every_frame), out)
    video = run.result()
    seconds = time.perf_counter() - t
    stages = {k: round(v, 3) for k, v in run.timings.items()}  # the final summaries included
    return {"frames": video.frames, "seconds": round(seconds, 3), "fps": round(video.frames / seconds, 2),
            "people": len(video.people), "detect_every": video.settings["detect_every_frames"],
            "stage_fps": {k: round(video.frames / v, 1) if v else None for k, v in stages.items()},
            "stage_seconds": stages}


def run_fer(python: str, clip: Path, threads: int, frequency: int) -> dict | None:
    cmd = [python, str(HERE / "fer_video_runner.py"), "--threads", str(threads), "--frequency", str(frequency),
           str(clip)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"fer failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a subprocess (measured by tests/peak_rss.py, so this process's own size,
    models and decoded frames included, does not leak into the child's number)."""
    t = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile() as err:
        status, peak = run_with_peak_rss(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        err.seek(0)
        if status != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {status}: {err.read().decode()[-500:]}")
    return peak, time.perf_counter() - t


def render(data: dict) -> str:
    lines = ["## Video: end-to-end fps, per stage, and memory vs video length", "",
             f"Measured with `{data['command']}` ({data['threads']} threads; {data['environment']}, "
             f"{data.get('load_end', float('nan')):.1f} at the end; detector {data.get('detector', '?')}). End to end = "
             "decode, detect, track, re-identify, classify (flip TTA), write frames.csv + annotated.mp4 + summaries; "
             "fps = video frames per wall-clock second. The default detects and classifies 5 times per second of "
             "video; between those frames the tracker carries boxes and each person keeps their last scores "
             "(`--classify-every-frame` classifies the tracker's boxes too). fer = `Video.analyze(FER(mtcnn=False), save_video=True)`, every frame "
             "or every `frequency`-th. ferkit reports every frame either way (tracker boxes between detections); "
             "fer with frequency K analyses and reports only every K-th frame. Rerun on an idle machine: these "
             "numbers are only comparable within one run.", "",
             "| clip | faces | tool | settings | fps | x real time | vs fer (same frames) |",
             "|---|---:|---|---|---:|---:|---:|"]
    for clip in data["clips"]:
        fer_fps = {r["frequency"]: r["fps"] for r in clip.get("fer", []) if r}
        for r in clip["ferkit"]:
            ref = fer_fps.get(r["fer_frequency"])
            vs = f"{r['fps'] / ref:.1f}x" if ref else "-"
            lines.append(f"| {clip['name']} | {clip['faces']} | ferkit | {r['settings']} | {r['fps']:.1f} | "
                         f"{r['fps'] / clip['fps']:.1f} | {vs} |")
        for r in clip.get("fer", []):
            if r:
                lines.append(f"| {clip['name']} | {clip['faces']} | fer {r.get('fer_version', '')} | frequency "
                             f"{r['frequency']} | {r['fps']:.1f} | {r['fps'] / clip['fps']:.1f} | |")
    status = []
    for clip in data["clips"]:
        default = clip["ferkit"][0]
        fer1 = next((r["fps"] for r in clip.get("fer", []) if r and r["frequency"] == 1), None)
        realtime = default["fps"] / clip["fps"]
        status.append(f"{clip['name']}: {realtime:.1f}x real time ({'met' if realtime >= AIM_REALTIME else 'NOT met'})"
                      + (f", {default['fps'] / fer1:.1f}x fer's fps ({'met' if default['fps'] >= AIM_VS_FER * fer1 else 'NOT met'})"
                         if fer1 else ""))
    lines += ["", f"Aims (issue 12): at least {AIM_REALTIME:.0f}x real time with the default settings, at least "
              f"{AIM_VS_FER:.0f}x fer's fps. This run: " + "; ".join(status) + ".", "",
              "Per-stage fps of ferkit (frames / seconds in the stage; detect runs in a thread of its own one "
              "detection step ahead, annotate (drawing + H.264 encoding of annotated.mp4) in another, both "
              "concurrently with the rest, so stage times overlap and do not add up to the wall time; classify "
              "includes smoothing; write = frames.csv, seconds.csv and the per-person and per-second aggregates; "
              "summaries = people.csv/json, summary.json, timeline.png and report.html every 5 s and at the end):",
              "",
              "| clip | settings | " + " | ".join(data["stages"]) + " |", "|---|---|" + "---:|" * len(data["stages"])]
    for clip in data["clips"]:
        for r in clip["ferkit"]:
            lines.append(f"| {clip['name']} | {r['settings']} | " + " | ".join(
                f"{r['stage_fps'].get(s) or '-'}" for s in data["stages"]) + " |")
    mem = data.get("memory")
    if mem:
        lines += ["", f"Memory (`{mem['command']}`): peak RSS of the whole process.", "",
                  "| video length | frames | peak RSS MB | wall s | fps (start-up included) | x real time |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in mem["rows"]:
            fps = r["frames"] / r["wall_s"]
            lines.append(f"| {r['seconds']:.0f} s | {r['frames']} | {r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} | "
                         f"{fps:.1f} | {fps / r['frames'] * r['seconds']:.1f} |")
        lines += ["", "These are the 720x480 clip's default settings through the `ferkit video` command, process "
                  "start-up, model loads and final summaries included: over a long video those fixed costs fade, "
                  "which is why the 10 min run's fps is higher than the 10 s speed clip's above."]
        lines += ["", f"Long vs short: {mem['ratio']:+.1%} (aim: within 5%: "
                  f"{'met' if abs(mem['ratio']) <= 0.05 else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="Length of each speed clip.")
    p.add_argument("--stride", type=int, default=15,
                   help="The --stride row (default 15: 2 detections per second of 30 fps video, vs 5 by default).")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--short-seconds", type=float, default=10.0)
    p.add_argument("--long-seconds", type=float, default=600.0)
    p.add_argument("--fer-python", default=DEFAULT_FER_PYTHON)
    p.add_argument("--skip-fer", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "video_speed.json"))
    p.add_argument("--render-only", action="store_true", help="Rewrite the .md from the --out JSON; measure nothing.")
    a = p.parse_args(argv)
    if a.render_only:
        data = json.loads(Path(a.out).read_text())
        Path(a.out).with_suffix(".md").write_text(render(data))
        return 0

    sys.path.insert(0, str(REPO / "src"))
    import cv2

    cv2.setNumThreads(a.threads)
    from ferkit.recognizer import Recognizer
    from ferkit.video.pipeline import DEFAULT_DETECT_FPS

    command = "python benchmarks/video_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    recognizer = Recognizer.for_video()  # as `ferkit video` makes it: one ONNX Runtime thread per session
    fer_ok = not a.skip_fer and Path(a.fer_python).exists()
    data: dict = {"command": command.strip(), "threads": a.threads, "clips": [],
                  "stages": ["decode", "detect", "track", "reid", "classify", "write", "annotate", "summaries"],
                  "environment": f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
                                 f"1-minute load average {os.getloadavg()[0]:.1f} at the start",
                  "detector": recognizer.detector.name}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = [("720x480", looped_clip(tmp / "clip720.mp4", a.seconds), 1),
                 ("640x360", group_pan_clip(tmp / "pan640.mp4", a.seconds), 3)]
        # warm-up: model sessions, dlib, matplotlib, PyAV
        run_ferkit(recognizer, clips[0][1], tmp / "warm", None)
        for name, clip, faces in clips:
            fps = cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS)
            row = {"name": name, "faces": faces, "fps": fps, "ferkit": [], "fer": []}
            default = f"default (detect {DEFAULT_DETECT_FPS:g}/s)"
            for stride, label, fer_frequency, every in ((None, default, 1, False),
                                                        (None, "--classify-every-frame", 1, True),
                                                        (a.stride, f"--stride {a.stride}", a.stride, False)):
                r = run_ferkit(recognizer, clip, tmp / f"out_{name}_{stride}_{every}", stride, every)
                r.update(settings=label, fer_frequency=fer_frequency)
                row["ferkit"].append(r)
                print(f"{name} ferkit {label}: {r['fps']} fps", file=sys.stderr)
            if fer_ok:
                for frequency in (1, a.stride):
                    r = run_fer(a.fer_python, clip, a.threads, frequency)
                    if r:
                        r["frequency"] = frequency
                        print(f"{name} fer frequency {frequency}: {r['fps']:.1f} fps", file=sys.stderr)
                    row["fer"].append(r)
            data["clips"].append(row)
        if not a.skip_memory:
            rows = []
            for seconds in (a.short_seconds, a.long_seconds):
                clip = looped_clip(tmp / f"loop_{seconds:.0f}.mp4", seconds)
                cmd = [sys.executable, "-m", "ferkit.cli", "video", str(clip), "--out", str(tmp / f"mem_{seconds:.0f}")]
                rss, wall = peak_rss_mb(cmd)
                frames = json.loads((tmp / f"mem_{seconds:.0f}" / "summary.json").read_text())["frames"]
                rows.append({"seconds": seconds, "frames": frames, "peak_rss_mb": round(rss, 1), "wall_s": round(wall, 1)})
                print(f"memory {seconds:.0f} s: {rss:.0f} MB", file=sys.stderr)
            data["memory"] = {"command": "ferkit video LOOPED_CLIP --out DIR", "rows": rows,
                              "ratio": rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1}
    data["load_end"] = os.getloadavg()[0]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(data))
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
