"""Test-split accuracy of model packages (single crop and flip TTA) -> results/accuracy.json.

    python benchmarks/accuracy.py                         # every shipped model on FER2013 PrivateTest
    python benchmarks/accuracy.py --model path/to/package # any package (repeatable)
    python benchmarks/accuracy.py --data ../shared/data/ferplus --out benchmarks/results/ferplus.json \
        --model ferplus --model default                  # FER+ FER2013Test, majority protocol
Then `python benchmarks/render.py` rewrites docs/BENCHMARKS.md.

Labels are compared by name: a model scored on data with a class it lacks (the 7-class default on FER+'s contempt)
skips those faces and says how many; a model with a class the data lacks (FER+'s contempt on FER2013) counts each
such prediction as an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ferkit.evaluate import evaluate_dataset
from ferkit.packages import TORCH_WEIGHTS_NAME, read_card, resolve_package, shipped_models

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "fer2013"


def _trained_on(training: dict) -> str:
    """'fer2013 Training' from a card's training sources (the folder names and splits, not the full paths)."""
    sources = training.get("data", {}).get("train", [])  # every exported run's card has them; an ensemble's not
    return " + ".join(f"{Path(s['path']).name} {s.get('split') or 'all'}" for s in sources) or "-"


def measure(model: str, data: Path, split: str) -> dict:
    folder = resolve_package(model)
    card = read_card(folder)
    # the package as inference uses it: the torch weights (for explanations only) are not counted
    row = {"model": card.name, "architecture": card.arch, "parameters": card.parameters,
           "size_mb": round(sum(f.stat().st_size for f in folder.iterdir() if f.name != TORCH_WEIGHTS_NAME) / 1e6, 2),
           "epochs": card.training.get("epochs"), "train_seconds": card.training.get("cpu_seconds_wall"),
           "data": str(os.path.relpath(data, HERE.parent)), "split": split,
           "recipe": card.training.get("recipe", {}).get("name"), "classes": len(card.labels),
           "trained_on": _trained_on(card.training)}
    init = card.training.get("init") or {}
    if init.get("epochs"):  # a warm restart: the run it started from trained first
        row.update(init_epochs=init["epochs"], init_train_seconds=init.get("cpu_seconds_wall"))
    for tta in ("none", "flip"):
        r = evaluate_dataset(data, folder, split, tta=tta)
        prefix = "" if tta == "none" else "flip_"
        row.update({f"{prefix}accuracy": round(r["accuracy"], 4), f"{prefix}macro_f1": round(r["macro_f1"], 4),
                    f"{prefix}top2_accuracy": round(r["top2_accuracy"], 4), f"{prefix}ece": round(r["ece"], 4),
                    "n": r["n"]})
        if tta == "none":
            row["skipped"] = r["skipped"]
            row["per_class_f1"] = {k: round(v["f1"], 4) for k, v in r["per_class"].items()}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="package name or folder (default: all shipped)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--split", default="PrivateTest")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "accuracy.json")
    args = ap.parse_args()
    command = " ".join(["python benchmarks/accuracy.py", *sys.argv[1:]])
    rows = [{**measure(m, args.data, args.split), "command": command} for m in (args.model or shipped_models())]
    # rows of models not measured this time are kept (a package measured once, e.g. a run's teacher, may be gone)
    old = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    kept = [{"command": old.get("command"), **r} for r in old["rows"] if r["model"] not in {x["model"] for x in rows}]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "rows": rows + kept}, indent=2) + "\n")
    for r in rows:
        print(f"{r['model']}: accuracy {r['accuracy']:.4f} (flip TTA {r['flip_accuracy']:.4f}), "
              f"macro-F1 {r['macro_f1']:.4f}, n={r['n']}")


if __name__ == "__main__":
    main()
