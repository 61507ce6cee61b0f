"""int8 quantisation of a real exported package, calibrated and checked on real FER2013 crops."""

import numpy as np
import torch

from ferkit.data import decode, open_dataset
from ferkit.models.export import export_onnx
from ferkit.packages import ModelCard, read_card, write_card
from ferkit.packages.quantize import quantize_package
from ferkit.models.registry import build_model
from ferkit.runtime import ModelRuntime


def test_int8_package_agrees_with_fp32_and_is_smaller(tmp_path, small_fer_tree):
    crops = [s.image for s in decode(open_dataset(small_fer_tree).entries)]
    torch.manual_seed(0)
    model = build_model("fervgg", num_classes=7, widths=[16, 32, 64, 64], hidden=32)
    model.train()
    with torch.no_grad():  # calibrate BatchNorm statistics on real faces so activations have realistic ranges
        model(torch.from_numpy(np.stack(crops)[:, None].astype(np.float32) / 127.5 - 1))
    card = ModelCard(name="fp32", labels=["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])
    export_onnx(model, card, tmp_path / "fp32")
    card.calibration = {"method": "temperature", "per_tta": {"none": {"temperature": 0.7}}}  # fitted on fp32 outputs
    write_card(tmp_path / "fp32", card)
    quantize_package(tmp_path / "fp32", tmp_path / "int8", crops[::2], "test calibration")
    fp32 = ModelRuntime(tmp_path / "fp32", calibrated=False).predict_proba(crops)
    int8 = ModelRuntime(tmp_path / "int8").predict_proba(crops)
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.9
    assert np.abs(fp32 - int8).max() < 0.1
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < 0.5 * (tmp_path / "fp32" / "model.onnx").stat().st_size
    assert read_card(tmp_path / "int8").training["quantization"] == "test calibration"
    assert not read_card(tmp_path / "int8").calibration  # the int8 graph needs its own fit (export does it)
