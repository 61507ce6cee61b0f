"""Which run-time crop reproduces the framing a model saw in training? -> results/crop_framing.{json,md}

FER2013 faces are pre-cropped 48x48 images. At run time ferkit detects faces in photos and must crop them the same
way, or accuracy silently drops. This script upscales FER2013 PrivateTest images to "photos" (4x, bicubic), runs the
detector, crops with each candidate policy, classifies, and compares with classifying the original 48x48 image:
the policy whose predictions agree most with the originals (and keep the accuracy) is the one to write into the
model card (`ferkit export --crop-policy P --crop-margin M`).

    python benchmarks/crop_framing.py --model default --per-class 80
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import cv2
import numpy as np

from ferkit.data import open_dataset
from ferkit.faces import crop_face, get_detector
from ferkit.io import read_image
from ferkit.runtime import ModelRuntime

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "fer2013"
CANDIDATES = [("box", 0.0), ("margin", 0.1), ("margin", 0.15), ("margin", 0.2), ("margin", 0.3), ("eyes", 0.2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--detector", default="dlib")
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "crop_framing")
    args = ap.parse_args()
    runtime = ModelRuntime(args.model)
    detector = get_detector(args.detector)
    entries = open_dataset(args.data).split("PrivateTest")
    rng = random.Random(0)
    by_class: dict[str, list] = {}
    for e in entries:
        by_class.setdefault(e.label, []).append(e)
    sample = [e for lab in sorted(by_class) for e in rng.sample(by_class[lab], min(args.per_class, len(by_class[lab])))]
    originals, truths, photos, detections = [], [], [], []
    for e in sample:
        gray = read_image(e.source, "gray")
        photo = cv2.cvtColor(cv2.resize(gray, (192, 192), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2RGB)
        found = detector.detect(photo)
        if not found:
            continue
        originals.append(gray)
        truths.append(e.label)
        photos.append(photo)
        detections.append(found[0])
    labels = runtime.labels
    truth_idx = np.array([labels.index(t) for t in truths])
    direct = runtime.predict_proba(originals).argmax(1)
    rows = [{"policy": "original 48x48 (no detection)", "margin": None, "accuracy": float((direct == truth_idx).mean()),
             "agreement": 1.0}]
    channels = "gray" if runtime.card.channels == 1 else "rgb"
    for policy, margin in CANDIDATES:
        crops = [crop_face(p, d, policy, runtime.card.input_size, channels, align=True, margin=margin)
                 for p, d in zip(photos, detections)]
        pred = runtime.predict_proba(crops).argmax(1)
        rows.append({"policy": policy, "margin": margin, "accuracy": float((pred == truth_idx).mean()),
                     "agreement": float((pred == direct).mean())})
    command = "python benchmarks/crop_framing.py " + " ".join(sys.argv[1:])
    result = {"command": command.strip(), "model": runtime.card.name, "detector": args.detector,
              "sampled": len(sample), "detected": len(truths), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"## Run-time crop policy vs training framing ({runtime.card.name}, {args.detector})", "",
          f"Measured with `{result['command']}`: {len(sample)} FER2013 PrivateTest images ({args.per_class} per class "
          f"at most), upscaled 4x; the detector found a face in {len(truths)}. Agreement = share of faces whose "
          "prediction equals the prediction on the original 48x48 image.", "",
          "| crop | margin | accuracy | agreement with original |", "|---|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['policy']} | {'' if r['margin'] is None else r['margin']} | {r['accuracy']:.4f} | "
                  f"{r['agreement']:.4f} |")
    args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
