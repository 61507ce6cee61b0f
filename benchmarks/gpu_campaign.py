"""Train several recipes side by side on a lent GPU and bring back their model packages (issue 10's members).

A session's GPU (the `device` tool) gets 30 minutes and only the checkout: the data must travel in an ignored folder
named in ``carry`` (64 MiB with the checkout's 12 MiB), and at most 8 files of 16 MiB come back through ``$OUT``.
Three steps:

    # here: FER2013 Training + PublicTest, 38 MiB as one tar.xz (PrivateTest, the test set, never leaves here);
    # --dataset ferplus: FER+'s, 50 MiB (one dataset per call). gpu/ is in .gitignore: it travels only as carried
    python benchmarks/gpu_campaign.py pack gpu/
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
float16, as every int8 export stores them; fp32 of a 7M net would not fit), plus campaign.json (per recipe: exit statuses,
wall seconds, best validation scores, the command). Checkpoints stay behind. A recipe that fails is reported and
the others go on.
"""

from __future__ import annotations

import argparse
import io
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
SHARED_DATA = REPO.parent / "shared" / "data"
DATASETS = ("fer2013", "ferplus")
"""What ``pack`` packs, one per device call: FER2013 (38 MiB) and FER+ (50 MiB) do not travel together."""
MAX_RECIPES = 3
"""Two files come back per recipe, and campaign.json: 7 of the 8 files a device call returns."""
KEEP = ("card.json", "metrics.csv", "curves.png", "recipe.yaml", "hardware.json")
"""What of a run folder comes back (its checkpoints stay on the device)."""


def _members(dataset: str, source: Path) -> list[tuple[Path, str]]:
    """(file, name in the archive) of everything ``dataset`` needs on the device, PrivateTest left out."""
    if dataset == "fer2013":
        files = sorted(p for p in source.rglob("*.jpg") if not p.name.startswith("PrivateTest_"))
    else:  # FER+: the Training and PublicTest folders (images and label.csv); its votes file is filtered by pack
        files = sorted(p for folder in ("FER2013Train", "FER2013Valid") for p in (source / folder).rglob("*")
                       if p.is_file())
    return [(p, f"{dataset}/{p.relative_to(source)}") for p in files]


def pack(dest: Path, dataset: str = "fer2013", source: Path | None = None) -> Path:
    """``dest``/DATASET.tar.xz: the dataset without its PrivateTest images or votes, paths kept. One solid xz
    stream: FER2013's 32,000 JPEGs of 1.7 KB share their headers, 38 MiB where a zip of them is 53 MiB, too much to
    travel with the checkout."""
    source = source or SHARED_DATA / dataset
    members = _members(dataset, source)
    if not members:
        raise SystemExit(f"{source}: no {dataset} images (the shared data is not here)")
    from ferkit.io import atomic_write

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:xz") as tar:
            for path, name in members:
                tar.add(path, name)
            votes = source / "fer2013new.csv"
            if dataset == "ferplus" and votes.is_file():  # FER+'s votes for Training and PublicTest only
                lines = votes.read_text().splitlines(keepends=True)
                kept = "".join(lines[:1] + [line for line in lines[1:] if not line.startswith("PrivateTest,")])
                info = tarfile.TarInfo(f"{dataset}/fer2013new.csv")
                info.size = len(kept.encode())
                tar.addfile(info, io.BytesIO(kept.encode()))

    dest.mkdir(parents=True, exist_ok=True)
    return atomic_write(dest / f"{dataset}.tar.xz", write)


def unpack(data: Path, into: Path) -> dict[str, Path]:
    """Each dataset in ``data`` (DATASET.tar.xz, or a DATASET/ folder unpacked already) -> its folder."""
    found = {}
    for name in DATASETS:
        if (data / name).is_dir():
            found[name] = data / name
        elif (data / f"{name}.tar.xz").is_file():
            with tarfile.open(data / f"{name}.tar.xz") as tar:  # the device has no unzip; Python reads xz itself
                tar.extractall(into, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            found[name] = into / name
    if not found:
        raise SystemExit(f"{data}: no {' or '.join(f'{d}.tar.xz' for d in DATASETS)} (make it with `pack`)")
    return found


def device_recipe(recipe: Path, datasets: dict[str, Path], dest: Path) -> Path:
    """A copy of ``recipe`` whose dataset paths point at the unpacked copies and without PrivateTest (not on the
    device)."""
    cfg = yaml.safe_load(recipe.read_text())
    for split in ("train", "val", "test"):
        sources = cfg.get("data", {}).get(split) or []
        for s in sources:
            name = Path(str(s.get("path", ""))).name
            if name in datasets:
                s["path"] = str(datasets[name])
            elif split != "test":
                raise SystemExit(f"{recipe}: its {split} data {s.get('path')} did not travel (pack it)")
        cfg["data"][split] = [s for s in sources if str(s.get("split", "")).lower() not in ("privatetest", "test")]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def run(recipes: list[Path], data: Path, out: Path, device: str, parallel: int, extra: list[str]) -> list[dict]:
    """Train and export every recipe, ``parallel`` at a time; returns (and writes) campaign.json's rows."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "ferkit-campaign"
    datasets = unpack(data, work)
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cli = [sys.executable, "-m", "ferkit.cli"]
    (work / "logs").mkdir(parents=True, exist_ok=True)  # logs travel inside each NAME.zip, not as files of $OUT
    out.mkdir(parents=True, exist_ok=True)
    # every recipe rewritten first: one whose data did not travel stops the call before anything trains
    pending = [device_recipe(recipe, datasets, work / "recipes" / recipe.name) for recipe in recipes]
    running: dict[str, tuple[subprocess.Popen, float, list[str], IO]] = {}
    rows: list[dict] = []
    while pending or running:
        while pending and len(running) < parallel:
            local = pending.pop(0)
            name = local.stem
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
        shutil.copy(package / "weights.safetensors", out / f"{name}.safetensors")  # float16, as int8 exports write
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
    a = sub.add_parser("pack", help="A dataset without PrivateTest, as DEST/DATASET.tar.xz for the device's carry.")
    a.add_argument("dest", type=Path)
    a.add_argument("--dataset", choices=DATASETS, default="fer2013")
    a.add_argument("--source", type=Path, help="The dataset's folder (default: ../shared/data/DATASET).")
    b = sub.add_parser("run", help="On the device: train and export the recipes into --out.")
    b.add_argument("recipes", nargs="+", type=Path)
    b.add_argument("--data", type=Path, required=True, help="The carried folder holding DATASET.tar.xz.")
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
        print(pack(args.dest, args.dataset, args.source))
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
