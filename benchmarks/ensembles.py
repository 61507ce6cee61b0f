"""Ensembles of ferkit models against their members on FER2013 PublicTest and PrivateTest -> results/ensembles.json.

    python benchmarks/ensembles.py default runs/member_seed2-pkg            # members: names or package folders
    python benchmarks/ensembles.py A B C --methods vote,average,rank --tta flip

Each member, and an ensemble package built by `ferkit ensemble build` for each method (rank and accuracy weights
fitted on PublicTest, never on PrivateTest), is loaded as `--model` would load it and scored on both splits with
flip TTA: accuracy, macro-F1, ECE (15 equal-width confidence bins) and ms per face (classification of the split's
48x48 faces in batches of 256, preprocessing, TTA and the combination included). The accuracy-vs-k curve is seed
001's: members ordered by PublicTest accuracy, the average of the top k for each k, selected on PublicTest and
reported on both splits (results/ensembles_accuracy_vs_k.png). Then `python benchmarks/render.py` rewrites
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ferkit import calibration
from ferkit.classify import load_classifier
from ferkit.combine import combine
from ferkit.ensembles import CURVE_PNG, accuracy, build_ensemble
from ferkit.evaluate import metrics_report
from ferkit.packages.ensemble import union_labels

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "fer2013"
SPLITS = ("PublicTest", "PrivateTest")
METHODS = ("vote", "average", "rank", "accuracy")


def truth_index(labels: list[str], truths: list[str]) -> tuple[list[int], np.ndarray]:
    """Rows whose true label the classifier can output, and their class indices (for ferkit.calibration's metrics)."""
    index = {lab: i for i, lab in enumerate(labels)}
    keep = [i for i, t in enumerate(truths) if t in index]
    return keep, np.array([index[truths[i]] for i in keep])


def load_split(data: Path, split: str) -> tuple[list[np.ndarray], list[str]]:
    from ferkit.data import decode, open_dataset

    samples = list(decode(open_dataset(data).split(split), "rgb", []))
    return [s.image for s in samples], [s.label for s in samples]


def score(model, faces: dict[str, tuple[list, list]], tta: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(row of metrics per split, probabilities per split) of one classifier, as `--model` loads it."""
    classifier = load_classifier(model, tta=tta)
    classifier.predict_proba(faces[SPLITS[0]][0][:256])  # warm-up
    row, probs = {"labels": len(classifier.labels)}, {}
    for split, (images, truths) in faces.items():
        t0 = time.perf_counter()
        p = classifier.predict_proba(images)
        ms = 1000 * (time.perf_counter() - t0) / len(images)
        r = metrics_report(truths, p, classifier.labels)
        keep, y = truth_index(classifier.labels, truths)
        row[split] = {"n": r["n"], "accuracy": round(r["accuracy"], 4), "macro_f1": round(r["macro_f1"], 4),
                      "ece": round(calibration.ece(p[keep], y), 4), "ms_per_face": round(ms, 3)}
        probs[split] = p
    return row, probs


def calibrated_ece(probs: dict[str, np.ndarray], labels: list[str], faces: dict[str, tuple[list, list]]) -> float:
    """PrivateTest ECE after a temperature fitted on PublicTest (what `ferkit calibrate ENSEMBLE` would give)."""
    keep_val, y_val = truth_index(labels, faces["PublicTest"][1])
    keep_test, y_test = truth_index(labels, faces["PrivateTest"][1])
    params = calibration.fit(probs["PublicTest"][keep_val], y_val, labels, "temperature")
    return round(calibration.ece(calibration.transform(probs["PrivateTest"][keep_test], params, labels), y_test), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="member packages: shipped names or folders")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--methods", default=",".join(METHODS), help="ensemble methods to build (comma-separated)")
    ap.add_argument("--tta", default="flip")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ensembles.json")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give at least two member packages")
    faces = {split: load_split(args.data, split) for split in SPLITS}
    members, member_probs, member_labels = [], [], []
    for model in args.models:
        row, probs = score(model, faces, args.tta)
        classifier = load_classifier(model)
        members.append({"model": model, "name": classifier.name, **row})
        member_labels.append(classifier.labels)
        member_probs.append(probs)
        print(f"member {model}: " + ", ".join(f"{s} {row[s]['accuracy']:.4f}" for s in SPLITS))
    work = Path(tempfile.mkdtemp(prefix="ferkit-ensembles-"))
    ensembles = []
    try:
        for method in args.methods.split(","):
            out = work / method
            card = build_ensemble(args.models, out, method, val=args.data if method in ("rank", "accuracy") else None,
                                  split="PublicTest", tta=args.tta, name=f"ensemble-{method}")
            row, probs = score(out, faces, args.tta)
            row["PrivateTest"]["ece_after_temperature"] = calibrated_ece(probs, card.labels, faces)
            ensembles.append({"method": method, "members": [m.name for m in card.members],
                              "weights": [m.weight for m in card.members], **row})
            print(f"ensemble {method}: " + ", ".join(f"{s} {row[s]['accuracy']:.4f}" for s in SPLITS))
        card = build_ensemble(args.models, work / "topk", "average", selection="topk", val=args.data,
                              split="PublicTest", tta=args.tta, name="ensemble-topk")
        curve_png = args.out.parent / "ensembles_accuracy_vs_k.png"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "topk" / CURVE_PNG, curve_png)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # seed 001's curve: top-k by PublicTest accuracy; PrivateTest accuracy of the same k members, for the report
    order = sorted(range(len(members)), key=lambda i: -members[i]["PublicTest"]["accuracy"])
    curve = []
    for k in range(1, len(order) + 1):
        top = order[:k]
        point = {"k": k, "members": [members[i]["model"] for i in top]}
        labels = [member_labels[i] for i in top]
        union = union_labels(labels)
        for split, (_, truths) in faces.items():
            p = combine([member_probs[i][split] for i in top], labels, union, "average", np.ones(k) / k)
            point[split] = round(accuracy(p, union, truths), 4)
        curve.append(point)
    result = {"command": " ".join(["python benchmarks/ensembles.py", *sys.argv[1:]]), "tta": args.tta,
              "data": os.path.relpath(args.data, HERE.parent), "members": members, "ensembles": ensembles,
              "curve": curve, "chosen_k": card.selection["k"], "curve_png": os.path.relpath(curve_png, HERE.parent)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} and {curve_png}")


if __name__ == "__main__":
    main()
