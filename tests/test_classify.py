"""The Classifier interface: ensemble maths on hand-computed examples, label sets combined by name, one crop per
crop spec, TTA modes, and ensemble packages that copy and load from anywhere (real ONNX sessions, real photos)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ferkit import labels as L
from ferkit.combine import combine, member_weights, ranks
from ferkit.errors import UserInputError
from ferkit.packages import PackageError, WEIGHTS_DIR

from .conftest import FER2013, PHOTOS, make_linear_onnx, need

GROUP_PHOTO = "dlib__2008_001009.jpg"


def variant(tmp: Path, name: str, **card) -> Path:
    """A copy of the shipped default package with its card edited (e.g. another crop policy)."""
    folder = tmp / name
    shutil.copytree(WEIGHTS_DIR / "default", folder)
    raw = json.loads((folder / "card.json").read_text())
    raw.update(name=name, **card)
    (folder / "card.json").write_text(json.dumps(raw))
    return folder


def fer_faces(n: int = 6) -> list[np.ndarray]:
    files = sorted((need(FER2013) / "test" / "happy").glob("*.jpg"))[:n]
    return [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]


# -- the maths, on hand-computed examples -------------------------------------------------------------------------

HS = ["happy", "sad"]


def test_average_is_the_unweighted_mean():
    probs = [np.array([[0.6, 0.4]]), np.array([[0.2, 0.8]])]
    out = combine(probs, [HS, HS], HS, "average", member_weights("average", 2))
    np.testing.assert_allclose(out, [[0.4, 0.6]], rtol=1e-6)


def test_vote_is_the_majority_and_reports_votes_plus_mean_over_members_plus_one():
    probs = [np.array([[0.6, 0.4]]), np.array([[0.51, 0.49]]), np.array([[0.1, 0.9]])]
    out = combine(probs, [HS] * 3, HS, "vote", member_weights("vote", 3))
    # votes happy 2, sad 1; mean happy (0.6+0.51+0.1)/3 = 0.40333; (2 + 0.40333) / 4 = 0.60083
    np.testing.assert_allclose(out, [[(2 + 1.21 / 3) / 4, (1 + 1.79 / 3) / 4]], rtol=1e-5)
    assert out.argmax() == 0  # the majority wins although the mean probability favours sad
    assert np.average(probs, axis=0).argmax() == 1


def test_vote_tie_is_broken_by_the_mean_probability():
    probs = [np.array([[0.6, 0.4]]), np.array([[0.3, 0.7]])]
    out = combine(probs, [HS] * 2, HS, "vote", member_weights("vote", 2))
    np.testing.assert_allclose(out, [[(1 + 0.45) / 3, (1 + 0.55) / 3]], rtol=1e-5)
    assert out.argmax() == 1


def test_rank_weights_follow_seed_000():
    # accuracies 0.70, 0.60, 0.65 -> ranks 3, 1, 2 -> w = R / sum R = 3/6, 1/6, 2/6
    np.testing.assert_allclose(member_weights("rank", 3, [0.70, 0.60, 0.65]), [0.5, 1 / 6, 1 / 3])
    np.testing.assert_allclose(ranks([0.7, 0.7, 0.5]), [2.5, 2.5, 1])  # ties share their mean rank


def test_accuracy_and_manual_weights():
    np.testing.assert_allclose(member_weights("accuracy", 2, [0.75, 0.25]), [0.75, 0.25])
    w = member_weights("manual", 2, manual=[3, 1])
    np.testing.assert_allclose(w, [0.75, 0.25])
    out = combine([np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])], [HS, HS], HS, "manual", w)
    np.testing.assert_allclose(out, [[0.75, 0.25]])
    with pytest.raises(UserInputError, match="one weight per member"):
        member_weights("manual", 3, manual=[1, 2])
    with pytest.raises(UserInputError, match="--val"):
        member_weights("rank", 2)


def test_label_sets_are_combined_by_name():
    """A 7-class FER2013-order member and an 8-class FER+-order member with contempt: averaged label by label over
    the members that output it (the 7-class one abstains on contempt), then renormalised."""
    p7 = dict(zip(L.FER2013_7, [0.1, 0.0, 0.1, 0.5, 0.1, 0.1, 0.1]))
    p8 = dict(zip(L.FERPLUS_8, [0.2, 0.3, 0.1, 0.1, 0.1, 0.0, 0.0, 0.2]))
    union = list(L.BASIC_8)
    out = combine([np.array([list(p7.values())]), np.array([list(p8.values())])], [list(p7), list(p8)], union,
                  "average", [0.5, 0.5])[0]
    by_hand = {lab: (p7[lab] + p8[lab]) / 2 for lab in L.FER2013_7} | {"contempt": p8["contempt"]}
    total = sum(by_hand.values())
    assert dict(zip(union, out)) == pytest.approx({k: v / total for k, v in by_hand.items()}, rel=1e-5)


# -- TTA ------------------------------------------------------------------------------------------------------------

def test_tencrop_views_are_the_corners_centre_and_their_mirrors():
    from ferkit.runtime import tencrop_views

    x = np.arange(2 * 1 * 6 * 6, dtype=np.float32).reshape(2, 1, 6, 6)
    views = tencrop_views(x, 4)
    assert len(views) == 10 and all(v.shape == (2, 1, 4, 4) for v in views)
    np.testing.assert_array_equal(views[0], x[..., :4, :4])
    np.testing.assert_array_equal(views[3], x[..., 2:, 2:])
    np.testing.assert_array_equal(views[4], x[..., 1:5, 1:5])
    np.testing.assert_array_equal(views[5], x[..., :4, :4][..., ::-1])


def test_tta_modes_on_the_shipped_model():
    from ferkit.runtime import TTA_MODES, ModelRuntime, TENCROP_SCALE, softmax, tencrop_views

    faces = fer_faces()
    runtime = ModelRuntime("default", calibrated=False)  # the views' arithmetic (calibration: test_calibration.py)
    got = {mode: runtime.predict_proba(faces, tta=mode) for mode in TTA_MODES}
    run = lambda x: softmax(runtime.session.run(None, {runtime.input_name: np.ascontiguousarray(x)})[0])  # noqa: E731
    x = runtime.preprocess(faces)
    np.testing.assert_allclose(got["none"], run(x), rtol=1e-5)
    np.testing.assert_allclose(got["flip"], (run(x) + run(x[..., ::-1])) / 2, rtol=1e-5)
    big = runtime.preprocess(faces, round(48 * TENCROP_SCALE))
    assert big.shape[-1] == 54
    np.testing.assert_allclose(got["tencrop"], np.mean([run(v) for v in tencrop_views(big, 48)], axis=0), rtol=1e-5)
    assert not np.allclose(got["tencrop"], got["flip"])
    with pytest.raises(UserInputError, match="tencrop"):
        runtime.predict_proba(faces, tta="twelve")


def test_cli_and_runtime_agree_on_tta_modes_and_default():
    from ferkit import cli, runtime

    assert cli.TTA_MODES == runtime.TTA_MODES and cli.DEFAULT_TTA == runtime.DEFAULT_TTA == "flip"


# -- ensembles as packages ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_members(tmp_path_factory) -> list[Path]:
    """The default (margin 0.1, aligned), a copy cropping the bare box, and a copy with the default's own crop spec
    under another name: three members, two crop specs."""
    tmp = tmp_path_factory.mktemp("members")
    return [WEIGHTS_DIR / "default", variant(tmp, "boxed", crop_policy="box"), variant(tmp, "twin")]


def test_each_face_is_cropped_once_per_crop_spec(tmp_path, three_members, monkeypatch):
    import ferkit.classify as classify
    from ferkit.ensembles import build_ensemble
    from ferkit.recognizer import Recognizer

    build_ensemble([str(m) for m in three_members], tmp_path / "ens", "average")
    calls = []
    real = classify.crop_face

    def counting(image, detection, **kw):
        calls.append(kw["policy"])
        return real(image, detection, **kw)

    monkeypatch.setattr(classify, "crop_face", counting)
    with Recognizer(tmp_path / "ens", "dlib", workers=1) as rec:
        assert len(rec.classifier.crop_specs) == 2
        faces = rec.analyze(need(PHOTOS) / GROUP_PHOTO).faces
    assert len(faces) >= 2
    assert sorted(calls) == sorted(["box"] * len(faces) + ["margin"] * len(faces))  # 2 per face, not 3


def test_ensemble_package_copies_and_loads_from_another_folder(tmp_path, three_members):
    from ferkit.classify import EnsembleClassifier, load_classifier
    from ferkit.ensembles import build_ensemble

    build_ensemble([str(m) for m in three_members], tmp_path / "a" / "ens", "manual", weights=[2, 1, 1])
    faces = fer_faces()
    before = load_classifier(tmp_path / "a" / "ens").predict_proba(faces)
    shutil.copytree(tmp_path / "a" / "ens", tmp_path / "b" / "moved")
    shutil.rmtree(tmp_path / "a")
    moved = load_classifier(tmp_path / "b" / "moved")
    assert isinstance(moved, EnsembleClassifier)
    assert [m.name for m in moved.card.members] == ["default", "boxed", "twin"]
    np.testing.assert_allclose(moved.weights, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(moved.predict_proba(faces), before, rtol=1e-6)
    # members give the same crop to every spec here (pre-cropped faces): the combination is the members' mean
    single = load_classifier("default").predict_proba(faces)
    np.testing.assert_allclose(before, single, rtol=1e-5)
    shutil.rmtree(tmp_path / "b" / "moved" / "members" / "boxed")
    with pytest.raises(PackageError, match="member 'boxed' is missing") as err:
        load_classifier(tmp_path / "b" / "moved")
    assert "\n" not in str(err.value)


def test_members_with_other_label_sets_are_combined_by_name_at_run_time(tmp_path):
    from ferkit.classify import load_classifier
    from ferkit.ensembles import build_ensemble

    folder, _, _ = make_linear_onnx(tmp_path / "ferplus8", list(L.FERPLUS_8), size=48)
    build_ensemble(["default", str(folder)], tmp_path / "ens", "average")
    ens = load_classifier(tmp_path / "ens")
    assert ens.labels == list(L.BASIC_8)
    faces = fer_faces()
    p7 = load_classifier("default").predict_proba(faces)
    p8 = load_classifier(folder).predict_proba(faces)
    p8_by_name = L.map_probs(p8, L.FERPLUS_8, L.BASIC_8, renormalise=False)
    expected = np.concatenate([(np.asarray(p7) + p8_by_name[:, :7]) / 2, p8_by_name[:, 7:]], axis=1)
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(ens.predict_proba(faces), expected, rtol=1e-5)


def test_build_refuses_bad_requests(tmp_path, three_members):
    from ferkit.ensembles import build_ensemble

    with pytest.raises(UserInputError, match="--val"):
        build_ensemble([str(m) for m in three_members], tmp_path / "e1", "rank")
    with pytest.raises(UserInputError, match="--val"):
        build_ensemble([str(m) for m in three_members], tmp_path / "e2", "average", selection="topk")
    with pytest.raises(UserInputError, match="at least two"):
        build_ensemble(["default"], tmp_path / "e3")
    with pytest.raises(UserInputError, match="one weight per member"):
        build_ensemble([str(m) for m in three_members], tmp_path / "e4", "manual", weights=[1.0])
    assert not (tmp_path / "e4").exists()


def test_selection_uses_only_the_validation_split(tmp_path, three_members, small_fer_tree):
    """The card's curve and member accuracies are measured on PublicTest alone (as evaluate measures them), and
    selecting on the test split is refused."""
    from ferkit.ensembles import build_ensemble
    from ferkit.evaluate import evaluate_dataset

    with pytest.raises(UserInputError, match="test split"):
        build_ensemble([str(m) for m in three_members], tmp_path / "e0", "rank", selection="topk",
                       val=small_fer_tree, split="PrivateTest")
    card = build_ensemble([str(m) for m in three_members], tmp_path / "ens", "rank", selection="topk",
                          val=small_fer_tree)
    n_public = len(list(small_fer_tree.rglob("PublicTest_*.jpg")))
    sel = card.selection
    assert sel["split"] == "PublicTest" and sel["n"] == n_public and [r["k"] for r in sel["curve"]] == [1, 2, 3]
    assert (tmp_path / "ens" / "accuracy_vs_k.png").stat().st_size > 1000
    public = evaluate_dataset(small_fer_tree, three_members[1], split="PublicTest")
    assert card.metrics["validation"]["members"][str(three_members[1])] == pytest.approx(public["accuracy"])
    assert len(card.members) == sel["k"]
    best = max(sel["curve"], key=lambda r: (r["accuracy"], -r["k"]))
    assert sel["k"] == best["k"]


def test_torch_classifier_matches_its_exported_package(tmp_path):
    torch = pytest.importorskip("torch")
    from ferkit.classify import PackageClassifier, TorchClassifier
    from ferkit.models.export import export_onnx
    from ferkit.models.registry import build_model
    from ferkit.packages import ModelCard

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=7, in_chans=1, input_size=48)
    card = ModelCard(name="tiny", labels=list(L.FER2013_7), input_size=48, channels=1)
    export_onnx(model, card, tmp_path / "tiny")
    faces = fer_faces()
    torch_side = TorchClassifier(model, card, tta="flip")
    onnx_side = PackageClassifier(tmp_path / "tiny", tta="flip")
    np.testing.assert_allclose(torch_side.predict_proba(faces), onnx_side.predict_proba(faces), atol=1e-4)
    assert torch_side.embed(faces).shape[0] == len(faces)
