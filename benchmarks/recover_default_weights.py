"""Recover a package's torch weights from its (int8 QDQ) ONNX graph, check them against the graph, and store them.

    python benchmarks/recover_default_weights.py                      # the shipped default, on FER2013 PrivateTest
    python benchmarks/recover_default_weights.py --model PKG --data ../shared/data/fer2013 --split PrivateTest

Why: the default's training runs (and so its fp32 checkpoint) are gone; only ``model.onnx`` ships. Grad-CAM and
class visualisation need the torch model, so the weights are dequantised from the graph
(:func:`ferkit.models.recover.state_dict_from_graph`) into the card's architecture. The recovered model is run on
every image of the split, preprocessed exactly as the runtime does, next to the ONNX graph: the top-1 agreement and
the largest probability difference go into the card (``training.torch_weights``) and results/recovered_weights.json.
The weights are stored as float16: the int8 values times their per-channel scales need no more, and the file stays
half the size of fp32 (the agreement is measured with the float16 file as stored).
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
import torch

from ferkit.data import decode, open_dataset
from ferkit.io import atomic_write, colour_mode
from ferkit.models.from_package import build_for_card, load_package_model, save_torch_weights
from ferkit.models.recover import state_dict_from_graph
from ferkit.packages import GRAPH_NAME, TORCH_WEIGHTS_NAME, read_card, resolve_package, write_card
from ferkit.runtime import ModelRuntime

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "fer2013"


def agreement(package: Path, data: Path, split: str, batch: int = 512) -> dict:
    """Top-1 agreement and probability differences of the package's torch model vs its ONNX graph on ``split``."""
    runtime = ModelRuntime(package, calibrated=False)  # the graph's own probabilities, as torch gives them
    model, card = load_package_model(package)
    entries = open_dataset(data).split(split)
    images = [s.image for s in decode(entries, colour_mode(card.channels))]
    onnx_p, torch_p = [], []
    for i in range(0, len(images), batch):
        x = runtime.preprocess(images[i:i + batch])
        onnx_p.append(runtime.predict_proba(images[i:i + batch]))
        with torch.no_grad():
            torch_p.append(torch.softmax(model(torch.from_numpy(x)), 1).numpy())
    p_onnx, p_torch = np.concatenate(onnx_p), np.concatenate(torch_p)
    truth = np.array([card.labels.index(e.label) for e in entries])
    diff = np.abs(p_onnx - p_torch)
    return {"split": split, "n": len(images),
            "top1_agreement": round(float((p_onnx.argmax(1) == p_torch.argmax(1)).mean()), 4),
            "max_prob_diff": round(float(diff.max()), 4), "mean_prob_diff": round(float(diff.mean()), 5),
            "onnx_accuracy": round(float((p_onnx.argmax(1) == truth).mean()), 4),
            "torch_accuracy": round(float((p_torch.argmax(1) == truth).mean()), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="package name or folder (written in place)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="PrivateTest")
    parser.add_argument("--min-agreement", type=float, default=0.99, help="refuse to write below this")
    args = parser.parse_args()
    package = resolve_package(args.model)
    card = read_card(package)
    t0 = time.time()
    model = build_for_card(card)
    model.load_state_dict(state_dict_from_graph(package / GRAPH_NAME, model))
    with tempfile.TemporaryDirectory() as tmp:  # measure the file exactly as it will ship, then move it in
        trial = Path(tmp) / package.name
        trial.mkdir()
        for name in (GRAPH_NAME, "card.json"):
            shutil.copy(package / name, trial / name)
        save_torch_weights(model, trial, torch.float16)
        result = agreement(trial, args.data, args.split)
        print(json.dumps(result, indent=2))
        if result["top1_agreement"] < args.min_agreement:
            print(f"agreement {result['top1_agreement']} < {args.min_agreement}: not written", file=sys.stderr)
            return 1
        shutil.copyfile(trial / TORCH_WEIGHTS_NAME, package / f".{TORCH_WEIGHTS_NAME}.tmp")
        (package / f".{TORCH_WEIGHTS_NAME}.tmp").replace(package / TORCH_WEIGHTS_NAME)
    card.training["torch_weights"] = {
        "source": f"dequantised from {GRAPH_NAME} (int8 QDQ: (q - zero_point) * scale per channel; BatchNorm folded "
                  f"into the conv/linear before it, so each BatchNorm is stored as the identity plus that bias)",
        "dtype": "float16",
        "command": "python benchmarks/recover_default_weights.py"
                   + (f" --model {args.model}" if args.model != "default" else ""),
        f"agreement_{args.split.lower()}": result,
        "note": "the graph also rounds every activation to uint8; the torch model does not, hence <100% agreement",
    }
    write_card(package, card)
    out = HERE / "results" / "recovered_weights.json"
    row = {"model": card.name, "data": os.path.relpath(args.data, HERE.parent), "seconds": round(time.time() - t0, 1), **result,
           "size_mb": round((package / TORCH_WEIGHTS_NAME).stat().st_size / 1e6, 2)}
    atomic_write(out, lambda p: p.write_text(json.dumps(row, indent=2) + "\n"))
    print(f"wrote {package / TORCH_WEIGHTS_NAME} ({row['size_mb']} MB), {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
