"""Peak memory of `ferkit analyze` and `ferkit bench` on folders of large photos -> results/memory.json + memory.md.

    python benchmarks/memory.py [--counts 4,16,32] [--workers 1,4] [--bench-counts 4,16]
                                [--before-src DIR --before-counts 4 --before-workers 1 --before-label TEXT]

The photos are tests/test_memory.py's: a shared photo enlarged 3x, pasted into a flat 16-bit gray 10000x9999 PNG
(3.4 MB on disk, 100 M pixels once decoded), hard-linked N times into a folder (issue 8's case: sixteen of them
took 9.3 GB in analyze, 14.4 GB with 4 workers). Each command runs in a subprocess; its peak RSS comes from
``RUSAGE_CHILDREN`` of a small wrapper (tests/peak_rss.py; the kernel's high-water mark of resident memory, not a sample).

- analyze: ``python -m ferkit.cli analyze FOLDER --out OUT --workers W`` (annotated images written), for every
  count x workers;
- bench: ``python -m ferkit.cli bench FOLDER --repeat 1 --batches 1,256 --min-seconds 0.2`` (default workers);
- ``--before-src DIR``: the same analyze runs with another checkout's ``src`` first on the path, e.g. the commit
  before the fix (``git worktree add /tmp/before 3958bcf``); keep its counts small, it needs ~0.9 GB per photo.

Then ``python benchmarks/render.py`` puts results/memory.md into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from tests.peak_rss import run_with_peak_rss  # noqa: E402
from tests.test_memory import BOUND_MB, folder_of, make_large_png  # noqa: E402


def run(args: list[str], src: Path, log: Path) -> dict:
    """``python -m ferkit.cli ARGS`` with ``src`` first on the path: exit status, peak RSS (MB), seconds."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    with open(log, "w") as out:
        status, peak_mb = run_with_peak_rss([sys.executable, "-m", "ferkit.cli", *args], env=env, stdout=out,
                                            stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed ({status}): {log.read_text()[-1000:]}")
    return {"peak_mb": round(peak_mb), "seconds": round(seconds, 1)}


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", type=ints, default=[4, 16, 32], help="analyze: photos per folder")
    ap.add_argument("--workers", type=ints, default=[1, 4], help="analyze: --workers values")
    ap.add_argument("--bench-counts", type=ints, default=[4, 16], help="bench: photos per folder ('' to skip)")
    ap.add_argument("--before-src", type=Path, help="another checkout's src folder to measure the same way")
    ap.add_argument("--before-counts", type=ints, default=[4])
    ap.add_argument("--before-workers", type=ints, default=[1])
    ap.add_argument("--before-label", default="before the fix", help="how the table names --before-src")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "memory.md")
    args = ap.parse_args()

    src = REPO / "src"
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferkit-memory-") as tmp:
        tmp = Path(tmp)
        image = tmp / "large.png"
        make_large_png(image)
        size_mb = image.stat().st_size / 1e6
        folders = {n: folder_of(image, tmp / f"in{n}", n)
                   for n in sorted({*args.counts, *args.bench_counts, *(args.before_counts if args.before_src else [])})}
        plan = [("analyze", "this checkout", src, n, w) for n in args.counts for w in args.workers]
        if args.before_src:
            plan += [("analyze", args.before_label, args.before_src, n, w)
                     for n in args.before_counts for w in args.before_workers]
        plan += [("bench", "this checkout", src, n, None) for n in args.bench_counts]
        for i, (command, code, where, n, w) in enumerate(plan):
            if command == "analyze":
                cli = ["analyze", str(folders[n]), "--out", str(tmp / f"out{i}"), "--workers", str(w)]
            else:
                cli = ["bench", str(folders[n]), "--repeat", "1", "--batches", "1,256", "--min-seconds", "0.2"]
            result = run(cli, where, tmp / f"log{i}.txt")
            rows.append({"command": command, "code": code, "photos": n, "workers": w, **result})
            print(f"{command} {code}: {n} photos, workers {w or 'default'}: {result['peak_mb']} MB, "
                  f"{result['seconds']} s", flush=True)

    data = {"command": shlex.join(["python", "benchmarks/memory.py", *sys.argv[1:]]), "photo": f"10000x9999 16-bit gray PNG, {size_mb:.1f} MB on disk",
            "bound_mb": BOUND_MB, "rows": rows,
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "python": platform.python_version()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    lines = ["## Peak memory on large photos", "",
             f"Measured with `{data['command']}`: each photo a {data['photo']} (100 M pixels decoded; issue 8's "
             "case), N hard links to it in a folder; peak RSS of the whole `ferkit` process (the kernel's high-water mark, via tests/peak_rss.py). "
             f"The documented bound is {BOUND_MB} MB for any number of photos (tests/test_memory.py checks it "
             "with 4 and 16 photos on every CI run). Before the fix, sixteen took 9.3 GB (14.4 GB with 4 workers).",
             "", "| command | code | photos | workers | peak RSS MB | seconds |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| ferkit {r['command']} | {r['code']} | {r['photos']} | {r['workers'] or 'default'} | "
                     f"{r['peak_mb']} | {r['seconds']} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
