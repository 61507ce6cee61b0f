"""Calibrated confidence: the fitting maths on synthetic logits whose true temperature is known, then `ferkit
calibrate`, the card, the runtime and `ferkit evaluate` on the real default package and real FER2013 rows."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ferkit import calibration as cal
from ferkit.cli import main
from ferkit.packages import WEIGHTS_DIR, read_card, write_card
from ferkit.runtime import TTA_MODES, ModelRuntime

from .conftest import FER2013, need

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def _sample(logits: np.ndarray, seed: int) -> np.ndarray:
    """Labels drawn from softmax(logits): for these rows the logits are perfectly calibrated by construction."""
    p = cal._softmax(logits)
    u = np.random.default_rng(seed).random(len(p))[:, None]
    return (p.cumsum(axis=1) < u).sum(axis=1).clip(max=p.shape[1] - 1)


# ---- the maths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shown_at", [2.5, 0.5])
def test_temperature_fit_recovers_a_known_temperature(shown_at):
    # True logits L; the "model" reports softmax(L / t). The calibration that undoes it is T = 1 / t.
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(20000, 7))
    y = _sample(logits, 1)
    probs = cal._softmax(logits / shown_at)
    fitted = cal.fit_temperature(probs, y)
    assert fitted == pytest.approx(1 / shown_at, rel=0.03)
    # and the fit is what makes it calibrated: NLL and ECE drop to those of the true probabilities
    after = cal.apply(probs, {"method": "temperature", "per_tta": {"none": {"temperature": fitted}}}, "none")
    assert cal.nll(after, y) < cal.nll(probs, y)
    assert cal.ece(after, y) < 0.02 < cal.ece(probs, y)
    assert cal.nll(after, y) == pytest.approx(cal.nll(cal._softmax(logits), y), abs=2e-3)


def test_vector_scaling_recovers_per_class_scale_and_bias():
    rng = np.random.default_rng(2)
    z = np.log(cal._softmax(rng.normal(scale=1.5, size=(12000, 4))))
    scale, bias = np.array([0.5, 1.0, 2.0, 1.5]), np.array([0.3, -0.2, 0.0, -0.4])
    y = _sample(z * scale + bias, 3)
    fit = cal.fit(np.exp(z), y, LABELS[:4], "vector")
    got_scale = np.array(list(fit["scale"].values()))
    got_bias = np.array(list(fit["bias"].values()))
    assert np.allclose(got_scale, scale, atol=0.1)
    # softmax is unchanged by a constant added to every bias: compare the biases relative to their mean
    assert np.allclose(got_bias - got_bias.mean(), bias - bias.mean(), atol=0.1)
    assert fit["after"]["nll"] < fit["before"]["nll"]
    assert fit["l2"] in cal.L2_GRID and len(fit["cv_nll"]) == len(cal.L2_GRID)


def test_metrics_on_a_hand_computed_example():
    probs = np.array([[1.0, 0.0], [0.6, 0.4]])
    y = np.array([0, 1])
    assert cal.nll(probs, y) == pytest.approx(-np.log(0.4) / 2)
    assert cal.brier(probs, y) == pytest.approx((0.6 ** 2 + 0.6 ** 2) / 2)
    # row 1: confidence 1, right; row 2: confidence 0.6, wrong -> ECE = 1/2 * |0 - 0.6|
    assert cal.ece(probs, y) == pytest.approx(0.3)
    r = cal.reliability(probs, y)
    assert sum(r["count"]) == 2 and r["count"][-1] == 1 and r["count"][8] == 1  # 0.6 lies in (8/15, 9/15]
    assert r["accuracy"][8] == 0.0 and r["confidence"][0] is None


def test_apply_is_the_identity_without_a_calibration_and_looks_vector_parameters_up_by_label():
    probs = cal._softmax(np.random.default_rng(4).normal(size=(5, 3))).astype(np.float32)
    assert cal.apply(probs, {}, "flip") is probs
    fit = {"temperature": 1.0, "scale": {"a": 1.0, "b": 2.0, "c": 0.5}, "bias": {"a": 0.1, "b": 0.0, "c": -0.3}}
    block = {"method": "vector", "per_tta": {"none": fit}}
    reordered = probs[:, [2, 0, 1]]
    assert np.allclose(cal.apply(reordered, block, "none", ["c", "a", "b"]),
                       cal.apply(probs, block, "none", ["a", "b", "c"])[:, [2, 0, 1]], atol=1e-6)
    assert cal.apply(probs, block, "tencrop") is probs  # a mode without a fit stays raw (and warns)
    with pytest.raises(cal.CalibrationError, match="label 'x'"):
        cal.apply(probs, block, "none", ["a", "b", "x"])


def test_a_card_with_a_broken_calibration_is_one_line(tmp_path):
    from ferkit.packages import PackageError

    shutil.copytree(WEIGHTS_DIR / "default", tmp_path / "pkg")
    raw = json.loads((tmp_path / "pkg" / "card.json").read_text())
    raw["calibration"]["per_tta"]["none"]["temperature"] = -1
    (tmp_path / "pkg" / "card.json").write_text(json.dumps(raw))
    with pytest.raises(PackageError, match="temperature must be a number > 0"):
        read_card(tmp_path / "pkg")


# ---- the real package on real FER2013 rows ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def fer_rows(tmp_path_factory) -> Path:
    """400 random PublicTest and 400 random PrivateTest images of FER2013 in one class-per-folder tree."""
    src = need(FER2013) / "test"
    root = tmp_path_factory.mktemp("fer_rows")
    files = sorted(src.glob("*/*.jpg"))
    rng = random.Random(0)
    for prefix in ("PublicTest_", "PrivateTest_"):
        for f in rng.sample([f for f in files if f.name.startswith(prefix)], 400):
            (root / f.parent.name).mkdir(exist_ok=True)
            shutil.copy(f, root / f.parent.name / f.name)
    return root


@pytest.fixture(scope="module")
def calibrated(fer_rows, tmp_path_factory) -> Path:
    """A temperature-calibrated copy of the default fitted by `ferkit calibrate --out` on the 400 PublicTest rows."""
    default = WEIGHTS_DIR / "default"
    before = {p.name: p.read_bytes() for p in default.iterdir()}
    out = tmp_path_factory.mktemp("calibrated") / "pkg"
    result = CliRunner().invoke(main, ["calibrate", str(default), "--val", str(fer_rows), "--out", str(out),
                                       "--no-evaluate"])
    assert result.exit_code == 0, result.output
    assert "tta=none: temperature" in result.output and "tta=flip: temperature" in result.output
    assert {p.name: p.read_bytes() for p in default.iterdir()} == before  # --out leaves the original untouched
    assert (out / "model.onnx").read_bytes() == before["model.onnx"]
    return out


def _crops(folder: Path, prefix: str) -> tuple[list[np.ndarray], np.ndarray]:
    files = sorted(folder.glob(f"*/{prefix}*.jpg"))
    return [np.asarray(Image.open(f).convert("L")) for f in files], np.array([LABELS.index(f.parent.name) for f in files])


def test_calibrate_writes_one_fit_per_tta_mode_and_the_card_round_trips(calibrated, fer_rows, tmp_path):
    card = read_card(calibrated)
    c = card.calibration
    assert c["method"] == "temperature" and set(c["per_tta"]) == set(TTA_MODES)
    assert c["fitted_on"] == f"{fer_rows} PublicTest" and c["n"] == 400
    for fit in c["per_tta"].values():
        assert 0.05 <= fit["temperature"] <= 20
        assert fit["after"]["nll"] < fit["before"]["nll"]  # in-sample, guaranteed by the fit
    assert card.metrics.get("measured_before_calibration") and "ece" not in card.metrics  # --no-evaluate
    write_card(tmp_path, card)
    assert read_card(tmp_path) == card


def test_calibration_lowers_nll_on_held_out_real_rows(calibrated, fer_rows):
    crops, y = _crops(fer_rows, "PrivateTest_")  # never seen by the fit
    runtime, fits = ModelRuntime(calibrated, calibrated=False), read_card(calibrated).calibration
    for tta in TTA_MODES:
        raw = runtime.predict_proba(crops, tta)
        fitted = cal.apply(raw, fits, tta)  # what the runtime applies: the next test checks that it does
        assert cal.nll(fitted, y) < cal.nll(raw, y) - 0.03, tta
        assert cal.ece(fitted, y) < cal.ece(raw, y) - 0.05, tta
        assert np.array_equal(fitted.argmax(1), raw.argmax(1))  # a temperature never changes a prediction


def test_the_runtime_applies_the_fit_of_its_own_tta_mode(calibrated, fer_rows):
    crops, _ = _crops(fer_rows, "PublicTest_")
    crops = crops[:64]
    fits = read_card(calibrated).calibration["per_tta"]
    assert fits["none"]["temperature"] != fits["flip"]["temperature"]
    for tta in TTA_MODES:
        raw = ModelRuntime(calibrated, tta=tta, calibrated=False).predict_proba(crops)
        got = ModelRuntime(calibrated, tta=tta).predict_proba(crops)
        assert np.allclose(got, cal._softmax(np.log(np.clip(raw, 1e-12, None)) / fits[tta]["temperature"]), atol=1e-5)
        other = next(m for m in TTA_MODES if m != tta)
        assert not np.allclose(got, cal.transform(raw, fits[other]), atol=1e-5)


def test_fitting_on_a_test_or_training_split_is_refused_in_one_line(fer_rows, tmp_path):
    for split, what in (("PrivateTest", "PrivateTest is the test split"), ("test", "PrivateTest is the test split"),
                        ("train", "Training is what the model learnt from"), ("all", "would fit on PrivateTest")):
        result = CliRunner().invoke(main, ["calibrate", "default", "--val", str(fer_rows), "--split", split,
                                           "--out", str(tmp_path / split)])
        assert result.exit_code == 1, result.output
        assert result.output.strip().startswith("ferkit: error: ") and what in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / split).exists()


def test_evaluate_prints_calibration_and_draws_the_reliability_diagram(calibrated, fer_rows, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", str(fer_rows), "--model", str(calibrated), "--split",
                                       "PrivateTest", "--tta", "flip", "--plots", str(tmp_path / "plots"),
                                       "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    line = next(x for x in result.output.splitlines() if x.startswith("ece="))
    assert f"ece={report['ece']:.4f}  nll={report['nll']:.4f}  brier={report['brier']:.4f}" in line
    assert f"calibrated: temperature scaling fitted on {fer_rows} PublicTest" in line
    assert sum(report["reliability"]["count"]) == report["n"] == 400
    crops, y = _crops(fer_rows, "PrivateTest_")
    probs = ModelRuntime(calibrated, tta="flip").predict_proba(crops)
    assert report["ece"] == pytest.approx(cal.ece(probs, y), abs=1e-6)
    assert report["brier"] == pytest.approx(cal.brier(probs, y), abs=1e-6)
    diagram = tmp_path / "plots" / "reliability.png"
    assert f"wrote {diagram}" in result.output
    with Image.open(diagram) as img:
        assert img.format == "PNG" and min(img.size) > 300


def test_export_calibrates_on_the_recipes_validation_split(fer_rows, tmp_path):
    pytest.importorskip("torch")
    from ferkit.train.config import config_from_dict
    from ferkit.train.export_run import export_run
    from ferkit.train.loop import fit

    recipe = {"name": "tiny", "seed": 7, "epochs": 1, "batch_size": 64, "optim": {"name": "sgd", "lr": 0.05},
              "model": {"arch": "fervgg", "args": {"widths": [8, 16, 16, 16], "hidden": 16}},
              "data": {"train": [{"path": str(fer_rows), "split": "PrivateTest"}], "limit": 64, "val_limit": 64,
                       "val": [{"path": str(fer_rows), "split": "PublicTest"}]}}
    fit(config_from_dict(recipe), tmp_path / "run", progress=False)
    card = export_run(tmp_path / "run", tmp_path / "pkg", evaluate=False)
    c = read_card(tmp_path / "pkg").calibration
    assert c == card.calibration and c["fitted_on"] == f"{fer_rows} PublicTest" and set(c["per_tta"]) == set(TTA_MODES)
    assert c["command"] == f"ferkit calibrate {tmp_path / 'pkg'} --val {fer_rows} --split PublicTest --method temperature"
    crops, _ = _crops(fer_rows, "PublicTest_")
    raw = ModelRuntime(tmp_path / "pkg", calibrated=False).predict_proba(crops[:32])
    assert np.allclose(ModelRuntime(tmp_path / "pkg").predict_proba(crops[:32]),
                       cal.transform(raw, c["per_tta"]["none"]), atol=1e-5)


def test_an_ensemble_is_calibrated_on_its_combined_output(calibrated, fer_rows, tmp_path):
    from ferkit.classify import load_classifier
    from ferkit.packages import read_ensemble_card

    members = []
    for name in ("raw_a", "raw_b"):  # the default's graph without its calibration: under-confident members
        shutil.copytree(calibrated, tmp_path / name)
        raw_card = json.loads((tmp_path / name / "card.json").read_text())
        del raw_card["calibration"]
        (tmp_path / name / "card.json").write_text(json.dumps(raw_card))
        members.append(str(tmp_path / name))
    ens = tmp_path / "ens"
    built = CliRunner().invoke(main, ["ensemble", "build", *members, "--method", "average", "--out", str(ens)])
    assert built.exit_code == 0, built.output
    result = CliRunner().invoke(main, ["calibrate", str(ens), "--val", str(fer_rows), "--no-evaluate"])
    assert result.exit_code == 0, result.output
    c = read_ensemble_card(ens).calibration
    assert c["method"] == "temperature" and set(c["per_tta"]) == set(TTA_MODES)
    crops, y = _crops(fer_rows, "PrivateTest_")
    raw = load_classifier(ens, calibrated=False).predict_proba(crops, "flip")
    fitted = load_classifier(ens).predict_proba(crops, "flip")
    assert np.allclose(fitted, cal.transform(raw, c["per_tta"]["flip"]), atol=1e-5)
    assert cal.nll(fitted, y) < cal.nll(raw, y) - 0.03 and cal.ece(fitted, y) < cal.ece(raw, y) - 0.05
