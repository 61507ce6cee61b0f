"""The shipped model packages: each card's numbers are reproduced by a fresh `ferkit evaluate` on its own test data.

`default` is the 7-class FER2013 model; `ferplus` the 8-class model trained on FER+'s vote distributions and scored
with FER+'s majority protocol (faces without a majority emotion are left out, so its splits are smaller).
"""

import json

import pytest
from click.testing import CliRunner

from ferkit.cli import main
from ferkit.labels import FER2013_7, FERPLUS_8
from ferkit.packages import WEIGHTS_DIR, read_card, shipped_models

# package -> (the data fixture its card was measured on, its labels in order, faces in the calibration split)
SHIPPED = {
    "default": ("fer2013", list(FER2013_7), 3589),
    "ferplus": ("ferplus", list(FERPLUS_8), 3078),  # FER2013Valid's faces with a majority emotion
}


def card_of(name):
    if not (WEIGHTS_DIR / name / "card.json").exists():
        pytest.fail(f"the {name} model package is missing from src/ferkit/weights/{name}")
    return read_card(WEIGHTS_DIR / name)


def test_every_shipped_model_is_checked_here():
    assert sorted(shipped_models()) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_package_is_small_and_documented(name):
    card = card_of(name)
    files = {f.name: f.stat().st_size for f in (WEIGHTS_DIR / name).iterdir()}
    assert sum(files.values()) - files.get("weights.safetensors", 0) < 8_000_000  # what inference loads
    assert files.get("weights.safetensors", 0) < 8_000_000  # the torch weights that explanations load
    assert card.labels == SHIPPED[name][1]
    for key in ("recipe", "command", "commit", "epochs", "cpu_seconds_wall"):
        assert card.training.get(key), key
    assert card.metrics["split"] == "PrivateTest"


@pytest.mark.parametrize("name", SHIPPED)
def test_card_metrics_match_a_fresh_evaluate(name, request, tmp_path):
    card = card_of(name)
    data = request.getfixturevalue(SHIPPED[name][0])
    out = tmp_path / "eval.json"
    # the card's single-crop numbers, reproduced by its own command (evaluate's default TTA is flip)
    assert card.metrics["command"].endswith("--tta none")
    result = CliRunner().invoke(main, ["evaluate", str(data), "--split", "PrivateTest", "--model", name,
                                       "--tta", "none", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == card.metrics["n"]
    assert round(report["accuracy"], 4) == card.metrics["accuracy"]
    assert round(report["macro_f1"], 4) == card.metrics["macro_f1"]
    # calibrated confidence: fitted on the validation split, ECE <= 0.03 on the test split, and a fresh evaluate
    # measures what the card claims
    assert card.metrics["ece"] <= 0.03 and card.metrics["flip_tta_ece"] <= 0.03
    assert report["ece"] == pytest.approx(card.metrics["ece"], abs=2e-3)
    assert report["nll"] == pytest.approx(card.metrics["nll"], abs=2e-3)
    assert report["brier"] == pytest.approx(card.metrics["brier"], abs=2e-3)
    assert report["calibrated"] and report["calibrated"].endswith(f"{SHIPPED[name][0]} PublicTest")


@pytest.mark.parametrize("name", SHIPPED)
def test_is_calibrated_on_the_validation_split_for_every_tta_mode(name):
    from ferkit.runtime import TTA_MODES

    c = card_of(name).calibration
    assert c["fitted_on"].split()[-1] == "PublicTest" and c["n"] == SHIPPED[name][2]
    assert set(c["per_tta"]) == set(TTA_MODES), f"rerun: ferkit calibrate {name} --val ../shared/data/... "
    for fit in c["per_tta"].values():
        assert fit["after"]["ece"] < fit["before"]["ece"] and fit["after"]["nll"] < fit["before"]["nll"]
