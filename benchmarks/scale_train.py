"""Data-parallel training speed: seconds per optimiser step with 1 and 2 worker processes -> results/scale_train.json.

    python benchmarks/scale_train.py                        # the shipped default's shape, FER2013, bf16
    python benchmarks/scale_train.py --limit 2048 --epochs 3

Each configuration is a real `ferkit train` run of the same recipe (the shipped default's FerVGG, real FER2013
images, global batch 128): one process with every core's threads, one process with one thread (a worker's share
of this machine), and two processes under torchrun (gloo, one thread each, as torchrun sets). The time per step is
the last epoch's wall time (metrics.csv, a tiny validation) over its steps; the first epoch warms up. Run it on an
otherwise idle machine: the speed-up of 2 processes on 2 cores is bounded by what the cores share (memory
bandwidth, the all-reduce of 3.5M gradients per step), not by ferkit.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FER = REPO.parent / "shared" / "data" / "fer2013"


def _recipe(limit: int, epochs: int, batch: int) -> dict:
    return {"name": "scale_train", "seed": 0, "epochs": epochs, "batch_size": batch,
            "data": {"train": [{"path": str(FER), "split": "train"}], "val": [{"path": str(FER), "split": "PublicTest"}],
                     "limit": limit, "val_limit": 64},
            "model": {"arch": "fervgg", "args": {"widths": [32, 96, 192, 384]}},
            "optim": {"name": "sgd", "lr": 0.01}}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(recipe: Path, out: Path, processes: int, threads: int | None) -> float:
    """Seconds of the last epoch of one `ferkit train` run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if processes == 1:
        cmd = [sys.executable, "-m", "ferkit.cli", "train", str(recipe), "--out", str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
               str(_port()), "-m", "ferkit.cli", "train", str(recipe), "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out / "metrics.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=1024, help="training images (FER2013 train, seeded sample)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128, help="the global batch")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale_train.json")
    args = ap.parse_args()
    steps = math.ceil(args.limit / args.batch)
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.yaml"
        recipe.write_text(yaml.safe_dump(_recipe(args.limit, args.epochs, args.batch)))
        for processes, threads in ((1, None), (1, 1), (2, 1)):
            load = os.getloadavg()[0]
            seconds = _run(recipe, Path(tmp) / f"run{processes}x{threads}", processes, threads)
            rows.append({"processes": processes, "threads_per_process": threads or torch.get_num_threads(),
                         "s_per_step": round(seconds / steps, 3), "img_s": round(args.limit / seconds, 1),
                         "load_before": round(load, 2)})
            print(rows[-1], flush=True)
    base = rows[0]["s_per_step"]
    for r in rows:
        r["speedup_vs_1_process"] = round(base / r["s_per_step"], 2)
    setup = (f"fervgg (the default's shape, 3.5M parameters), bf16, global batch {args.batch}, {args.limit} FER2013 "
             f"train images ({steps} steps per epoch), last of {args.epochs} epochs, {cores} cores, torch "
             f"{torch.__version__}, gloo")
    command = " ".join(["python benchmarks/scale_train.py", *sys.argv[1:]])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "setup": setup, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
