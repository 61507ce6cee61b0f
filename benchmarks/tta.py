"""Test-time augmentation modes (none, flip, tencrop) on FER2013 PublicTest and PrivateTest -> results/tta.json.

    python benchmarks/tta.py                 # the shipped default
    python benchmarks/tta.py --model PKG     # any model or ensemble package (repeatable)

Accuracy and macro-F1 from `ferkit evaluate` (the data's own 48x48 faces), and ms per face of the classification
(preprocessing, every view through ONNX Runtime, the mean), so the default TTA is chosen on numbers. Then
`python benchmarks/render.py` rewrites docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ferkit.evaluate import evaluate_dataset
from ferkit.runtime import TTA_MODES

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "fer2013"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="package name or folder (default: the shipped default)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "tta.json")
    args = ap.parse_args()
    rows = []
    for model in args.model or ["default"]:
        for split in ("PublicTest", "PrivateTest"):
            for tta in TTA_MODES:
                t0 = time.perf_counter()
                r = evaluate_dataset(args.data, model, split, tta=tta)
                seconds = time.perf_counter() - t0
                rows.append({"model": str(model), "split": split, "tta": tta, "n": r["n"],
                             "accuracy": round(r["accuracy"], 4), "macro_f1": round(r["macro_f1"], 4),
                             "ms_per_face_with_decoding": round(1000 * seconds / r["n"], 3)})
                print(f"{model} {split} {tta}: accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python benchmarks/tta.py", *sys.argv[1:]]),
                                    "data": os.path.relpath(args.data, HERE.parent), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
