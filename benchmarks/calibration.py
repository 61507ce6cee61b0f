"""Calibration of a model package before and after `ferkit calibrate`, per TTA mode -> results/calibration.json.

    python benchmarks/calibration.py                      # the shipped default
    python benchmarks/calibration.py --model path/to/pkg  # any package

Fits each method (temperature, vector) on FER2013 PublicTest with the same code as `ferkit calibrate`
(:func:`ferkit.calibration.fit_modes` on the package's raw probabilities) and measures PrivateTest: accuracy,
macro-F1, mean top-1 confidence, ECE (15 bins), NLL and Brier score, raw and calibrated. The row of the method the
package's card holds is also computed from the card's own parameters (what the runtime applies). No timing is
taken, so a busy machine does not change the numbers. Then `python benchmarks/render.py` rewrites docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from ferkit.calibration import METHODS, apply, calibration_metrics, fit_modes
from ferkit.packages import read_card, resolve_package
from ferkit.packages.calibrate import probabilities
from ferkit.runtime import TTA_MODES

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = Path("../shared/data/fer2013")


def scores(probs: np.ndarray, y: np.ndarray) -> dict:
    m = calibration_metrics(probs, y)
    pred = probs.argmax(axis=1)
    return {"accuracy": round(float((pred == y).mean()), 4),
            "macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
            "mean_confidence": round(m["mean_confidence"], 4),
            **{k: round(m[k], 4) for k in ("ece", "nll", "brier")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="package name or folder (default: the shipped default)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="FER2013 (PublicTest and PrivateTest splits)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "calibration.json")
    args = ap.parse_args()
    folder = resolve_package(args.model)
    card = read_card(folder)
    y_val, val, _ = probabilities(folder, args.data, "PublicTest", TTA_MODES, for_fitting=True)
    y_test, test, _ = probabilities(folder, args.data, "PrivateTest", TTA_MODES)
    fits = {method: fit_modes(val, y_val, card.labels, method) for method in METHODS}
    shipped = card.calibration.get("method")
    rows = []
    for tta in TTA_MODES:
        rows.append({"tta": tta, "calibration": "none (raw)", **scores(test[tta], y_test)})
        for method, fit in fits.items():
            params = fit["per_tta"][tta]
            rows.append({"tta": tta, "calibration": method, "temperature": params["temperature"],
                         "l2": params.get("l2"), "shipped": method == shipped,
                         **scores(apply(test[tta], fit, tta, card.labels), y_test)})
        if shipped and tta in card.calibration["per_tta"]:
            rows.append({"tta": tta, "calibration": f"{shipped} (the card's own parameters)", "shipped": True,
                         **scores(apply(test[tta], card.calibration, tta, card.labels), y_test)})
    result = {"command": " ".join(["python benchmarks/calibration.py", *sys.argv[1:]]), "model": card.name,
              "data": str(args.data), "fitted_on": "PublicTest", "measured_on": "PrivateTest",
              "n_fit": int(len(y_val)), "n_test": int(len(y_test)), "card_calibration": shipped,
              "card_fitted_on": card.calibration.get("fitted_on"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"tta={r['tta']:<5} {r['calibration']:<40} accuracy {r['accuracy']:.4f}  ECE {r['ece']:.4f}  "
              f"NLL {r['nll']:.4f}  Brier {r['brier']:.4f}  mean confidence {r['mean_confidence']:.4f}")


if __name__ == "__main__":
    main()
