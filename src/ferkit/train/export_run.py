"""Turn a training run into a model package: ONNX graph + card with provenance and measured test metrics.

The card's metrics are measured here on the exported ONNX graph (not the torch model), through the same
:func:`ferkit.evaluate.evaluate_dataset` that `ferkit evaluate` runs, so the card and a fresh evaluation agree.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferkit.io import colour_mode
from ferkit.packages import ModelCard, read_card, write_card
from ferkit.packages.quantize import quantize_package
from ferkit.train.card import run_card
from ferkit.train.run import load_run_model


def export_run(run: str | Path, out: str | Path, which: str = "best", name: str | None = None,
               crop_policy: str = "margin", crop_margin: float = 0.2, evaluate: bool = True,
               command: str = "", quantize: str | None = None, calibration_n: int = 1024) -> ModelCard:
    """Export ``run``'s best (or last) weights to a package at ``out``; evaluate on the recipe's test data.

    With ``quantize='int8'`` the fp32 graph is exported to a temporary folder, evaluated there (its metrics go to
    ``card.training['fp32_metrics']``), and statically quantised into ``out`` with ``calibration_n`` training crops;
    the card's ``metrics`` are then those of the int8 graph that ships.
    """
    from ferkit.models.export import check_parity, export_onnx

    run, out = Path(run), Path(out)
    model, cfg = load_run_model(run, which)
    card = run_card(run, model, cfg, which, name or out.name, crop_policy, crop_margin, command)
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be int8 or None, not {quantize!r}")
    fp32_dir = Path(tempfile.mkdtemp(prefix="ferkit-fp32-")) / out.name if quantize else out
    graph = export_onnx(model, card, fp32_dir)
    card.training["onnx_parity_max_abs_diff"] = float(check_parity(model, graph))
    test = cfg.data.test[0] if evaluate and cfg.data.test else None
    if quantize:
        if test:
            fp32 = evaluate_card_metrics(fp32_dir, test.path, test.split)
            card.training["fp32_metrics_before_quantization"] = {k: v for k, v in fp32.items() if "command" not in k}
        write_card(fp32_dir, card)
        crops = _calibration_crops(cfg, calibration_n)
        quantize_package(fp32_dir, out, crops, f"int8 static QDQ (per-channel weights, MinMax activations), calibrated "
                                               f"on {len(crops)} random {cfg.data.train[0].split} images")
        card.training["quantization"] = read_card(out).training["quantization"]
        shutil.rmtree(fp32_dir.parent, ignore_errors=True)
    if test:
        card.metrics = evaluate_card_metrics(out, test.path, test.split)
    write_card(out, card)
    return card


def _calibration_crops(cfg, n: int) -> list:
    """``n`` training images chosen with the recipe's seed (decoded as the model's input channels)."""
    import random

    from ferkit.data import decode, open_dataset

    source = cfg.data.train[0]
    entries = open_dataset(source.path, cfg.data.ferplus_mode).split(source.split)
    chosen = random.Random(cfg.seed).sample(entries, min(n, len(entries)))
    return [s.image for s in decode(chosen, colour_mode(cfg.data.channels))]


def evaluate_card_metrics(package: Path, data: str, split: str | None) -> dict[str, Any]:
    """Headline metrics (single crop and flip TTA) with the command that reproduces each."""
    from ferkit.evaluate import evaluate_dataset

    split = split or "all"  # a test source without a split is scored whole (evaluate's default is the test split)
    metrics: dict[str, Any] = {"data": data, "split": split}
    for tta in ("none", "flip"):
        report = evaluate_dataset(data, package, split, tta=tta)
        key = "" if tta == "none" else "flip_tta_"
        metrics[f"{key}accuracy"] = round(report["accuracy"], 4)
        metrics[f"{key}macro_f1"] = round(report["macro_f1"], 4)
        metrics[f"{key}top2_accuracy"] = round(report["top2_accuracy"], 4)
        metrics[f"{key}n"] = report["n"]
        metrics[f"{key}command"] = (f"ferkit evaluate {data} --split {split} --model {package.name}"
                                    + f" --tta {tta}")
    return metrics
