"""Train several recipes side by side on a lent GPU and bring back their model packages (issue 10's members).

A session's GPU (the `device` tool) gets 30 minutes and only the checkout: the data must travel in an ignored folder
named in ``carry`` (64 MiB with the checkout's 12 MiB), and at most 8 files of 16 MiB come back through ``$OUT``.
Three steps:

    # here: FER2013 Training + PublicTest, 38 MiB as one tar.xz (PrivateTest, the test set, never leaves here)
    python benchmarks/gpu_campaign.py pack gpu/            # gpu/ must be in .git/info/exclude
    # on the device (run tool, carry ["gpu"]): three recipes at once, ~5.5 s per epoch each for a 7M fervgg
    PYTHONPATH=src python3 benchmarks/gpu_campaign.py run configs/a.yaml configs/b.yaml configs/c.yaml \
        --data gpu --out "$OUT" --device cuda
    # here: unbundle what came back (the run tool's files_at), score on PrivateTest, select ensembles on PublicTest
    python benchmarks/gpu_campaign.py receive FILES_AT --into runs/gpu
    ferkit evaluate ../shared/data/fer2013 --model runs/gpu/packages/a --split PrivateTest
    python benchmarks/ensembles.py runs/gpu/packages/a runs/gpu/packages/b runs/gpu/packages/c

``run`` rewrites each recipe's FER2013 paths to the unpacked copy and drops its PrivateTest split, trains each with
``ferkit train --device ...`` (``--parallel`` at once, the machine's CPU threads shared among them: augmentation
runs on the CPU and bounds the speed), exports each run to an int8 package (``ferkit export --quantize int8``,
temperature-calibrated on PublicTest), and writes per recipe two files that fit the way back: NAME.zip (the package
but its torch weights, the run's card, metrics, curves, recipe and log) and NAME.safetensors (the torch weights in
float16, as the shipped default's; fp32 of a 7M net would not fit), plus campaign.json (per recipe: exit statuses,
wall seconds, best validation scores, the command). Checkpoints stay behind. A recipe that fails is reported and
the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import IO

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data" / "fer2013"
DATA_NAME = "fer2013.tar.xz"
MAX_RECIPES = 3
"""Two files come back per recipe, and campaign.json: 7 of the 8 files a device call returns."""
KEEP = ("card.json", "metrics.csv", "curves.png", "recipe.yaml", "hardware.json")
"""What of a run folder comes back (its checkpoints stay on the device)."""


def pack(dest: Path, source: Path = DATA) -> Path:
    """``dest``/fer2013.tar.xz: every FER2013 image except PrivateTest's, paths kept. One solid xz stream, because
    the 32,000 JPEGs of 1.7 KB share their headers: 38 MiB where a zip of them is 53 MiB, too much to travel with
    the checkout."""
    files = sorted(p for p in source.rglob("*.jpg") if not p.name.startswith("PrivateTest_"))
    if not files:
        raise SystemExit(f"{source}: no FER2013 images (the shared data is not here)")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / DATA_NAME
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:xz") as tar:
        for p in files:
            tar.add(p, str(Path("fer2013") / p.relative_to(source)))
    os.replace(tmp, target)
    return target


def unpack(data: Path, into: Path) -> Path:
    """The FER2013 folder inside ``data`` (a folder holding fer2013.tar.xz, or an unpacked fer2013/ already)."""
    if (data / "fer2013").is_dir():
        return data / "fer2013"
    with tarfile.open(data / DATA_NAME) as tar:  # the device has no unzip; Python reads xz itself
        tar.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return into / "fer2013"


def device_recipe(recipe: Path, fer2013: Path, dest: Path) -> Path:
    """A copy of ``recipe`` whose FER2013 sources point at ``fer2013`` and without PrivateTest (not on the device)."""
    cfg = yaml.safe_load(recipe.read_text())
    for split in ("train", "val", "test"):
        sources = cfg.get("data", {}).get(split) or []
        for s in sources:
            if Path(str(s.get("path", ""))).name == "fer2013":
                s["path"] = str(fer2013)
        cfg["data"][split] = [s for s in sources if str(s.get("split", "")).lower() not in ("privatetest", "test")]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def run(recipes: list[Path], data: Path, out: Path, device: str, parallel: int, extra: list[str]) -> list[dict]:
    """Train and export every recipe, ``parallel`` at a time; returns (and writes) campaign.json's rows."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "ferkit-campaign"
    fer2013 = unpack(data, work)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cli = [sys.executable, "-m", "ferkit.cli"]
    (work / "logs").mkdir(parents=True, exist_ok=True)  # logs travel inside each NAME.zip, not as files of $OUT
    out.mkdir(parents=True, exist_ok=True)
    pending = list(recipes)
    running: dict[str, tuple[subprocess.Popen, float, list[str], IO]] = {}
    rows: list[dict] = []
    while pending or running:
        while pending and len(running) < parallel:
            recipe = pending.pop(0)
            name = recipe.stem
            local = device_recipe(recipe, fer2013, work / "recipes" / recipe.name)
            cmd = [*cli, "train", str(local), "--device", device, "--out", str(work / "runs" / name), *extra]
            log = open(work / "logs" / f"{name}.log", "w")  # noqa: SIM115 - closed when the process ends
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time(), cmd,
                             log)
            print(f"started {name}: {' '.join(cmd)}", file=sys.stderr)
        time.sleep(2)
        for name, (proc, started, cmd, log) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            log.close()
            rows.append(_finish(name, proc.returncode, time.time() - started, cmd, work / "runs" / name, out, cli,
                                env))
            (out / "campaign.json").write_text(json.dumps(rows, indent=2))
    return rows


def _finish(name: str, status: int, seconds: float, cmd: list[str], run_dir: Path, out: Path, cli: list[str],
            env: dict) -> dict:
    """Export a finished run and bundle what travels (NAME.zip, NAME.safetensors); one row of campaign.json."""
    row = {"recipe": name, "train_status": status, "train_seconds": round(seconds, 1), "command": " ".join(cmd)}
    log = run_dir.parent.parent / "logs" / f"{name}.log"
    package = run_dir.with_name(f"{name}-package")
    if status == 0:
        with open(log, "a") as f:
            row["export_status"] = subprocess.run([*cli, "export", str(run_dir), "--out", str(package),
                                                   "--quantize", "int8"], stdout=f, stderr=subprocess.STDOUT,
                                                  env=env).returncode
    card = run_dir / "card.json"
    if card.exists():
        row["validation"] = json.loads(card.read_text()).get("metrics", {}).get("validation")
    with zipfile.ZipFile(out / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(log, f"logs/{name}.log")
        for f in KEEP:
            if (run_dir / f).exists():
                z.write(run_dir / f, f"runs/{name}/{f}")
        if row.get("export_status") == 0:
            for f in sorted(package.iterdir()):
                if f.name != "weights.safetensors":
                    z.write(f, f"packages/{name}/{f.name}")
    if row.get("export_status") == 0 and (package / "weights.safetensors").exists():
        from safetensors.numpy import load_file, save_file

        weights = {k: v.astype("float16") if v.dtype.kind == "f" else v
                   for k, v in load_file(package / "weights.safetensors").items()}
        save_file(weights, out / f"{name}.safetensors")
    print(f"finished {name}: {row}", file=sys.stderr)
    return row


def receive(files: Path, into: Path) -> list[str]:
    """Unbundle a device call's files: ``into``/packages/NAME (weights included), runs/NAME, logs/; returns the
    package folders."""
    packages = []
    for bundle in sorted(files.glob("*.zip")):
        with zipfile.ZipFile(bundle) as z:
            z.extractall(into)
        name = bundle.stem
        weights = files / f"{name}.safetensors"
        if weights.exists() and (into / "packages" / name).is_dir():
            shutil.copy2(weights, into / "packages" / name / "weights.safetensors")
            packages.append(str(into / "packages" / name))
    if (files / "campaign.json").exists():
        shutil.copy2(files / "campaign.json", into / "campaign.json")
    return packages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    a = sub.add_parser("pack", help="Zip FER2013 without PrivateTest into DEST for the device's carry.")
    a.add_argument("dest", type=Path)
    a.add_argument("--source", type=Path, default=DATA)
    b = sub.add_parser("run", help="On the device: train and export the recipes into --out.")
    b.add_argument("recipes", nargs="+", type=Path)
    b.add_argument("--data", type=Path, required=True, help="The carried folder holding fer2013.zip.")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    b.add_argument("--parallel", type=int, default=3, help="Recipes trained at once (3 fit one H100).")
    b.add_argument("--epochs", type=int, help="Passed to ferkit train (e.g. 1 for a smoke run).")
    b.add_argument("--limit", type=int, help="Passed to ferkit train.")
    b.add_argument("--val-limit", type=int, help="Passed to ferkit train.")
    c = sub.add_parser("receive", help="Here: unbundle the files a device call brought back.")
    c.add_argument("files", type=Path, help="The folder holding NAME.zip, NAME.safetensors and campaign.json.")
    c.add_argument("--into", type=Path, required=True)
    args = p.parse_args(argv)
    if args.step == "pack":
        print(pack(args.dest, args.source))
        return 0
    if args.step == "receive":
        print("\n".join(receive(args.files, args.into)))
        return 0
    if len(args.recipes) > MAX_RECIPES:
        p.error(f"at most {MAX_RECIPES} recipes per device call: two files come back per recipe, 8 in all")
    extra = [f for k in ("epochs", "limit", "val_limit") if getattr(args, k) is not None
             for f in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]
    rows = run(args.recipes, args.data, args.out, args.device, args.parallel, extra)
    return 0 if all(r["train_status"] == 0 and r.get("export_status") == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
