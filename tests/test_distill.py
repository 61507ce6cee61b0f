"""Warm starts (``init``) and knowledge distillation from a model package (``distill``), on real FER2013 images."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ferkit.labels import FER2013_7 as FER2013
from ferkit.runtime import ModelRuntime
from ferkit.train.config import ConfigError, config_from_dict
from ferkit.train.distill import cached_teacher_probabilities, soften
from ferkit.train.loop import fit
from ferkit.train.tensors import load_tensors
from tests.conftest import make_linear_onnx
from tests.test_train import tiny_recipe


def test_soften_is_a_temperature_softmax():
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t3 = np.exp(logits / 3) / np.exp(logits / 3).sum(1, keepdims=True)
    np.testing.assert_allclose(soften(p, 1.0), p, atol=1e-6)
    np.testing.assert_allclose(soften(p, 3.0), t3, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        soften(p, 0.0)


@pytest.mark.parametrize("distill, message", [({"teacher": "t", "weight": 1.5}, "weight"),
                                               ({"teacher": "t", "temperature": 0}, "temperature"),
                                               ({"teacher": "t", "alpha": 0.5}, "alpha")])
def test_distill_section_is_validated(distill, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(tiny_recipe("a", "b", distill=distill))


def test_distillation_targets_are_the_teachers_flip_averaged_probabilities(tmp_path, small_fer_tree):
    # The teacher knows only four of the seven labels, in its own order: targets are mapped by name.
    teacher_labels = ["sad", "happy", "neutral", "angry"]
    teacher, _, _ = make_linear_onnx(tmp_path / "teacher", teacher_labels, size=16)
    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=1,
                      distill={"teacher": str(teacher), "weight": 0.7, "temperature": 2.0, "flip": True})
    fit(config_from_dict(raw), tmp_path / "run", progress=False)
    stored = load_file(tmp_path / "run" / "teacher_targets.safetensors")["probs"]

    train = load_tensors([(str(small_fer_tree), None)], FER2013, 48, 1)
    crops = [img[0] for img in train.images.numpy()]
    flip = ModelRuntime(teacher, tta="flip").predict_proba(crops)
    soft = flip ** 0.5 / (flip ** 0.5).sum(1, keepdims=True)
    expected = np.zeros((len(crops), len(FER2013)), np.float32)
    for j, label in enumerate(teacher_labels):
        expected[:, FER2013.index(label)] = soft[:, j]
    np.testing.assert_allclose(stored.numpy(), expected, atol=1e-5)
    assert float(stored[:, FER2013.index("disgust")].abs().max()) == 0.0
    # a resumed run reads the same targets back from the run folder
    cache = tmp_path / "run" / "teacher_targets.safetensors"
    again = cached_teacher_probabilities(cache, str(teacher), train.images, FER2013, 2.0, True)
    assert torch.equal(again, stored)


def test_init_starts_from_another_runs_weights(tmp_path, small_fer_tree):
    fit(config_from_dict(tiny_recipe(small_fer_tree, small_fer_tree, epochs=1)), tmp_path / "a", progress=False)
    # lr 0: the parameters of run b after one epoch are exactly the ones it started from.
    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=1, init=str(tmp_path / "a"), seed=99)
    raw["optim"] = {"name": "sgd", "lr": 0.0, "weight_decay": 0.0}
    fit(config_from_dict(raw), tmp_path / "b", progress=False)
    a, b = load_file(tmp_path / "a" / "best.safetensors"), load_file(tmp_path / "b" / "last.safetensors")
    params = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(a[k], b[k]) for k in params)
    # the package's card says where the weights started and how long that run trained
    from ferkit.train.export_run import export_run

    card = export_run(tmp_path / "b", tmp_path / "pkg", evaluate=False)
    assert card.training["init"]["run"] == str(tmp_path / "a") and card.training["init"]["epochs"] == 1

    from ferkit.train.run import RunError

    raw["init"] = str(tmp_path / "missing")
    with pytest.raises(RunError, match="missing"):
        fit(config_from_dict(raw), tmp_path / "c", progress=False)
