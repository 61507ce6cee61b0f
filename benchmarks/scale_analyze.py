"""`ferkit analyze` on a local Ray cluster with 1 and 2 detection workers vs single-process -> results/scale_analyze.json.

    python benchmarks/scale_analyze.py [--photos DIR] [--copies 1] [--workers 1,2] [--out-json F]

One run each, in this process, on the same photos (``--copies N`` analyses N copies of each, under other names, for a
longer job): the single-process engine (``analyze_paths``, the default threads), then for each W in ``--workers`` a
fresh local Ray cluster of W + 1 CPUs (W detection tasks at once and one classifier actor, which reserves a CPU) and
``analyze_on_ray(..., workers=W)``. Each run writes into a fresh output folder (nothing is skipped). Reported:
images/s and faces/s over the run's wall time (model loads included, Ray start-up not: it is its own column), where
the time goes (decode+detect+crop and classify summed over tasks and actors, detector and model loads, worker
processes' first import of ferkit (NumPy, OpenCV, ONNX Runtime), the driver's journal and table writes, Ray start-up and shutdown), and the largest probability difference between the engines.

Then ``python benchmarks/render.py`` puts it into docs/BENCHMARKS.md and docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PHOTOS = REPO.parent / "shared" / "data" / "photos"
# Ray workers import ferkit from PYTHONPATH (ray_session passes it on): this checkout's src first.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(REPO / "src"))


def photo_folder(src: Path, copies: int, into: Path) -> Path:
    """The photos (copied ``copies`` times under distinct names: symlinks would resolve to one source)."""
    from ferkit.io import is_image_path

    folder = into / "photos"
    folder.mkdir()
    for photo in sorted(p for p in src.iterdir() if is_image_path(p)):
        for k in range(copies):
            shutil.copy(photo, folder / (f"{k}_{photo.name}" if copies > 1 else photo.name))
    return folder


def local_run(folder: Path, out: Path) -> dict:
    from ferkit.analyze import analyze_paths
    from ferkit.recognizer import Recognizer

    t0 = time.perf_counter()
    with Recognizer() as recognizer:
        loaded = time.perf_counter() - t0
        summary = analyze_paths([folder], recognizer, out, annotated=False, progress=False)
        timings = dict(recognizer.timings)
    wall = time.perf_counter() - t0
    stages = {"decode_detect_crop": timings["decode"] + timings["detect"] + timings["align_crop"],
              "classify": timings["classify"], "model_detector_load": loaded, "worker_start": None,
              "write_and_other": None}
    return {"engine": "local", "workers": recognizer.workers, "images": summary.images, "faces": summary.faces,
            "wall_s": wall, "startup_s": 0.0, "shutdown_s": 0.0, "stages": stages}


def ray_run(folder: Path, out: Path, workers: int) -> dict:
    from ferkit.scale.analyze import analyze_on_ray
    from ferkit.scale.cluster import ray_session

    t0 = time.perf_counter()
    session = ray_session(None, "benchmarks/scale_analyze.py", num_cpus=workers + 1)
    session.__enter__()
    started = time.perf_counter() - t0
    try:
        summary = analyze_on_ray([str(folder)], out, workers=workers)
    finally:
        t1 = time.perf_counter()
        session.__exit__(None, None, None)
        shutdown = time.perf_counter() - t1
    s = summary.stages
    stages = {"decode_detect_crop": s["decode"] + s["detect"] + s["align_crop"], "classify": s["classify"],
              "model_detector_load": s["model_load"] + s["detector_load"], "worker_start": s["worker_import"],
              "write_and_other": s["write"]}
    return {"engine": "ray", "workers": workers, "images": summary.images, "faces": summary.faces,
            "wall_s": summary.seconds, "startup_s": started, "shutdown_s": shutdown, "stages": stages}


def max_prob_diff(local_out: Path, ray_out: Path) -> float:
    import pandas as pd

    a = pd.read_csv(local_out / "faces.csv").sort_values(["source", "face"]).reset_index(drop=True)
    b = pd.read_parquet(ray_out / "faces.parquet")
    b = b[b["face"].notna()].sort_values(["source", "face"]).reset_index(drop=True)
    if len(a) != len(b) or not (a[["x", "y", "w", "h"]].to_numpy() == b[["x", "y", "w", "h"]].to_numpy()).all():
        raise SystemExit(f"{ray_out}: other faces than the single process found")
    cols = list(a.columns[9:])
    return float((a[cols].to_numpy() - b[cols].to_numpy().astype(float)).__abs__().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out-json", type=Path, default=HERE / "results" / "scale_analyze.json")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = photo_folder(args.photos, args.copies, tmp)
        rows = [local_run(folder, tmp / "local")]
        print(rows[-1], flush=True)
        diffs = []
        for w in (int(v) for v in args.workers.split(",")):
            rows.append(ray_run(folder, tmp / f"ray{w}", w))
            diffs.append(max_prob_diff(tmp / "local", tmp / f"ray{w}"))
            print(rows[-1], flush=True)
    for r in rows:
        r["images_per_s"] = r["images"] / r["wall_s"]
        r["faces_per_s"] = r["faces"] / r["wall_s"]
        r["stages"] = {k: None if v is None else round(v, 2) for k, v in r["stages"].items()}
        for k in ("wall_s", "startup_s", "shutdown_s", "images_per_s", "faces_per_s"):
            r[k] = round(r[k], 3 if k.endswith("per_s") else 2)
    result = {
        "command": "python benchmarks/scale_analyze.py " + " ".join(map(shlex.quote, sys.argv[1:])),
        "photos": os.path.relpath(args.photos, REPO), "copies": args.copies, "images": rows[0]["images"], "faces": rows[0]["faces"],
        "max_prob_diff": max(diffs) if diffs else None, "rows": rows,
        "machine": (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), Python "
                    f"{platform.python_version()}, load average {load:.2f} at start (shared machine: noisy)"),
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out_json}")


if __name__ == "__main__":
    main()
