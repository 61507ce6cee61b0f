"""Evaluation: metrics equal scikit-learn's, honest skipping, groupings, confusion PNGs, the CLI end to end."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, top_k_accuracy_score

from ferkit.cli import main
from ferkit.evaluate import metrics_report, save_confusion_plots
from ferkit.labels import FER2013_7
from tests.conftest import make_linear_onnx


def _random_case(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = list(FER2013_7)
    y = rng.integers(0, 7, n)
    logits = rng.normal(size=(n, 7)) + 2.0 * np.eye(7)[y] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, y, probs


def test_metrics_equal_sklearn():
    labels, y, probs = _random_case()
    report = metrics_report([labels[i] for i in y], probs, labels)
    pred = probs.argmax(1)
    assert report["n"] == len(y)
    assert report["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert report["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert report["top2_accuracy"] == pytest.approx(top_k_accuracy_score(y, probs, k=2, labels=range(7)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    for i, lab in enumerate(labels):
        assert report["per_class"][lab] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert report["confusion"]["matrix"] == confusion_matrix(y, pred, labels=range(7)).tolist()
    norm = np.array(report["confusion_normalized"]["matrix"])
    np.testing.assert_allclose(norm.sum(1), 1.0, atol=1e-3)


def test_labels_the_model_lacks_are_skipped_and_counted():
    labels, y, probs = _random_case(50)
    truths = [labels[i] for i in y] + ["contempt"] * 4
    probs = np.vstack([probs, np.full((4, 7), 1 / 7)])
    report = metrics_report(truths, probs, labels)
    assert report["n"] == 50 and report["skipped"]["label_not_in_model"] == {"contempt": 4}


def test_three_way_grouping_sums_probabilities():
    labels = list(FER2013_7)
    probs = np.zeros((2, 7))
    probs[0, labels.index("angry")] = 0.3
    probs[0, labels.index("sad")] = 0.3
    probs[0, labels.index("happy")] = 0.4  # happy is top-1, but negative wins 0.6 to 0.4 after grouping
    probs[1, labels.index("surprise")] = 1.0
    report = metrics_report(["fear", "neutral"], probs, labels, grouping="3")
    assert report["confusion"]["labels"] == ["positive", "neutral", "negative"]
    assert report["accuracy"] == 1.0


def test_six_way_grouping_drops_disgust():
    labels, y, probs = _random_case(100, seed=3)
    truths = [labels[i] for i in y]
    report = metrics_report(truths, probs, labels, grouping="6")
    assert "disgust" not in report["per_class"]
    assert report["n"] == sum(t != "disgust" for t in truths)
    assert report["skipped"]["not_in_grouping"] == {"disgust": sum(t == "disgust" for t in truths)}


def test_confusion_pngs_open(tmp_path):
    labels, y, probs = _random_case(60)
    paths = save_confusion_plots(metrics_report([labels[i] for i in y], probs, labels), tmp_path)
    assert [p.name for p in paths] == ["confusion.png", "confusion_normalized.png"]
    for p in paths:
        with Image.open(p) as im:
            im.load()
            assert im.size[0] > 200


def test_cli_evaluate_end_to_end(tmp_path, small_fer_tree):
    folder, _, _ = make_linear_onnx(tmp_path / "lin", list(FER2013_7), size=48)
    (small_fer_tree / "angry" / "PublicTest_broken.jpg").write_bytes(b"\xff\xd8garbage")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["evaluate", str(small_fer_tree), "--model", str(folder), "--split", "PublicTest",
                                       "--json", str(out), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert {"n", "accuracy", "macro_f1", "top2_accuracy", "per_class", "confusion", "skipped"} <= set(report)
    assert report["n"] == 7 * 6 and report["skipped"]["unreadable"] == 1
    assert "accuracy=" in result.output and (tmp_path / "plots" / "confusion.png").exists()


def test_cli_evaluate_bad_split_is_one_line(tmp_path, small_fer_tree):
    folder, _, _ = make_linear_onnx(tmp_path / "lin", list(FER2013_7), size=48)
    result = CliRunner().invoke(main, ["evaluate", str(small_fer_tree), "--model", str(folder), "--split", "Training"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "no entries in split" in result.output
