"""Turn a training run into a model package: ONNX graph + card with provenance, calibration and test metrics.

The card's metrics are measured here on the exported ONNX graph (not the torch model), through the same
:func:`ferkit.evaluate.evaluate_dataset` that `ferkit evaluate` runs, so the card and a fresh evaluation agree.
The package is calibrated on the recipe's validation split before that (`ferkit calibrate`'s code, on the graph
that ships, after any quantisation): a fresh export's confidences mean what the README says they mean, for the
cost of one more pass over the validation split.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from ferkit.calibration import METHODS, CalibrationError
from ferkit.io import colour_mode
from ferkit.models.from_package import save_torch_weights
from ferkit.packages import ModelCard, read_card, write_card
from ferkit.packages.calibrate import calibrate_package
from ferkit.packages.measure import evaluate_card_metrics
from ferkit.packages.quantize import quantize_package
from ferkit.train.card import run_card
from ferkit.train.run import load_run_model

log = logging.getLogger(__name__)


def export_run(run: str | Path, out: str | Path, which: str = "best", name: str | None = None,
               crop_policy: str = "margin", crop_margin: float = 0.2, evaluate: bool = True,
               command: str = "", quantize: str | None = None, calibration_n: int = 1024,
               calibrate: str | None = "temperature") -> ModelCard:
    """Export ``run``'s best (or last) weights to a package at ``out``; calibrate on the recipe's validation data
    (``calibrate``: a method of :data:`ferkit.calibration.METHODS`, or None); evaluate on its test data.

    With ``quantize='int8'`` the fp32 graph is exported to a temporary folder, evaluated there (its metrics go to
    ``card.training['fp32_metrics']``), and statically quantised into ``out`` with ``calibration_n`` training crops;
    the card's ``metrics`` are then those of the int8 graph that ships, and its torch weights are stored in float16.
    """
    from ferkit.models.export import check_parity, export_onnx

    run, out = Path(run), Path(out)
    model, cfg = load_run_model(run, which)
    card = run_card(run, model, cfg, which, name or out.name, crop_policy, crop_margin, command)
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be int8 or None, not {quantize!r}")
    if calibrate not in (None, *METHODS):
        raise ValueError(f"calibrate must be one of {METHODS} or None, not {calibrate!r}")
    fp32_dir = Path(tempfile.mkdtemp(prefix="ferkit-fp32-")) / out.name if quantize else out
    graph = export_onnx(model, card, fp32_dir)
    card.training["onnx_parity_max_abs_diff"] = float(check_parity(model, graph))
    test = cfg.data.test[0] if evaluate and cfg.data.test else None
    if quantize:
        if test:
            fp32 = evaluate_card_metrics(fp32_dir, test.path, test.split)
            card.training["fp32_metrics_before_quantization"] = {k: v for k, v in fp32.items() if "command" not in k}
        write_card(fp32_dir, card)
        crops = _quantization_crops(cfg, calibration_n)
        quantize_package(fp32_dir, out, crops, f"int8 static QDQ (per-channel weights, MinMax activations), calibrated "
                                               f"on {len(crops)} random {cfg.data.train[0].split} images")
        card.training["quantization"] = read_card(out).training["quantization"]
        # float16 is plenty for the torch model that explanations run beside an int8 graph, and halves the file
        save_torch_weights(model, out, torch.float16)
        card.training["torch_weights"] = {"source": f"the run's {which} weights", "dtype": "float16"}
        shutil.rmtree(fp32_dir.parent, ignore_errors=True)
    write_card(out, card)
    val = cfg.data.val[0] if calibrate and cfg.data.val else None
    if val:
        split = val.split or "all"
        try:
            card.calibration = calibrate_package(out, val.path, split, calibrate, remeasure=False, command=(
                f"ferkit calibrate {out} --val {val.path} --split {split} --method {calibrate}"))["calibration"]
        except CalibrationError as exc:  # e.g. a recipe that validates on test data: export, uncalibrated
            log.warning("%s: not calibrated: %s", out, exc)
    if test:
        card.metrics = evaluate_card_metrics(out, test.path, test.split)
    write_card(out, card)
    return card


def _quantization_crops(cfg, n: int) -> list:
    """``n`` training images chosen with the recipe's seed (decoded as the model's input channels)."""
    import random

    from ferkit.data import decode, open_dataset

    source = cfg.data.train[0]
    entries = open_dataset(source.path, cfg.data.ferplus_mode).split(source.split)
    chosen = random.Random(cfg.seed).sample(entries, min(n, len(entries)))
    return [s.image for s in decode(chosen, colour_mode(cfg.data.channels))]
