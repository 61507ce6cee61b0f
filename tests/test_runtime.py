"""The ONNX runtime on a tiny real ONNX graph built in-test with known weights."""

import numpy as np
import pytest

from ferkit.packages import ModelCard, PackageError, read_card, resolve_package
from ferkit.runtime import ModelRuntime, softmax
from tests.conftest import make_linear_onnx

LABELS = ["happy", "sad", "neutral"]


def test_probabilities_match_numpy_reference(tmp_path):
    folder, w, b = make_linear_onnx(tmp_path / "lin", LABELS, size=8)
    rt = ModelRuntime(folder)
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(5)]
    x = np.stack([(c.astype(np.float32) / 255 - 0.5) / 0.5 for c in crops]).reshape(5, -1)
    expected = softmax(x @ w + b)
    np.testing.assert_allclose(rt.predict_proba(crops), expected, rtol=1e-5, atol=1e-6)
    scores = rt.predict(crops)
    assert list(scores[0]) == LABELS and sum(scores[0].values()) == pytest.approx(1.0)


def test_preprocessing_converts_size_and_channels(tmp_path):
    folder, _, _ = make_linear_onnx(tmp_path / "lin", LABELS, size=8, channels=1)
    rt = ModelRuntime(folder, batch_size=2)
    rgb = np.full((32, 40, 3), 200, dtype=np.uint8)
    gray = np.full((8, 8), 200, dtype=np.uint8)
    batch = rt.preprocess([rgb, gray])
    assert batch.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-6)
    assert rt.predict_proba([rgb, gray, gray]).shape == (3, 3)  # crosses a batch boundary
    assert rt.predict_proba([]).shape == (0, 3)


def test_flip_tta_averages_the_mirror(tmp_path):
    folder, _, _ = make_linear_onnx(tmp_path / "lin", LABELS, size=8)
    crop = np.random.default_rng(2).integers(0, 256, (8, 8), dtype=np.uint8)
    plain = ModelRuntime(folder).predict_proba([crop, crop[:, ::-1].copy()])
    tta = ModelRuntime(folder, tta="flip").predict_proba([crop])
    np.testing.assert_allclose(tta[0], plain.mean(axis=0), rtol=1e-5)


def test_card_labels_are_canonical_and_checked(tmp_path):
    folder, _, _ = make_linear_onnx(tmp_path / "lin", ["Happiness", "sadness", "Neutral"], size=8)
    assert read_card(folder).labels == LABELS
    with pytest.raises(PackageError, match="duplicate"):
        ModelCard(name="x", labels=["happy", "happiness"])
    card = read_card(folder)
    card.labels = ["happy", "sad"]
    (folder / "card.json").write_text(card.to_json())
    with pytest.raises(ValueError, match="3 outputs but the card lists 2"):
        ModelRuntime(folder)


def test_missing_package_is_a_clear_error(tmp_path):
    with pytest.raises(PackageError, match="neither a package folder nor a shipped model"):
        resolve_package(tmp_path / "nothing")
