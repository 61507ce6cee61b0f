"""The shipped default model: its card's numbers are reproduced by a fresh `ferkit evaluate`."""

import json

import pytest
from click.testing import CliRunner

from ferkit.cli import main
from ferkit.packages import WEIGHTS_DIR, read_card


@pytest.fixture(scope="module")
def card():
    if not (WEIGHTS_DIR / "default" / "card.json").exists():
        pytest.fail("the default model package is missing from src/ferkit/weights/default")
    return read_card(WEIGHTS_DIR / "default")


def test_default_package_is_small_and_documented(card):
    files = {f.name: f.stat().st_size for f in (WEIGHTS_DIR / "default").iterdir()}
    assert sum(files.values()) - files.get("weights.safetensors", 0) < 8_000_000  # what inference loads
    assert files.get("weights.safetensors", 0) < 8_000_000  # the torch weights that explanations load
    assert card.labels == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    for key in ("recipe", "command", "commit", "epochs", "cpu_seconds_wall"):
        assert card.training.get(key), key
    assert card.metrics["split"] == "PrivateTest" and card.metrics["n"] == 3589


def test_card_metrics_match_a_fresh_evaluate(card, fer2013, tmp_path):
    out = tmp_path / "eval.json"
    # the card's single-crop numbers, reproduced by its own command (evaluate's default TTA is flip)
    assert card.metrics["command"].endswith("--tta none")
    result = CliRunner().invoke(main, ["evaluate", str(fer2013), "--split", "PrivateTest", "--model", "default",
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
    assert report["calibrated"] and report["calibrated"].endswith("fer2013 PublicTest")


def test_default_is_calibrated_on_the_validation_split_for_every_tta_mode(card):
    from ferkit.runtime import TTA_MODES

    c = card.calibration
    assert c["fitted_on"].split()[-1] == "PublicTest" and c["n"] == 3589
    assert set(c["per_tta"]) == set(TTA_MODES), "rerun: ferkit calibrate default --val ../shared/data/fer2013 ..."
    for fit in c["per_tta"].values():
        assert fit["after"]["ece"] < fit["before"]["ece"] and fit["after"]["nll"] < fit["before"]["nll"]
