"""Explanations on real photos: Grad-CAM per face mapped back through the (rotated) crop, for a package and an
ensemble; the default package's recovered torch weights; every architecture's Grad-CAM layer; class visualisation.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ferkit.errors import UserInputError
from ferkit.packages import ModelCard, PackageError, read_card, resolve_package, write_card
from tests.conftest import FER2013, PHOTOS, REPO, need

pytest.importorskip("pytorch_grad_cam")

PHOTO = "face_recognition__obama_and_biden.jpg"  # three faces, two of them tilted (the crops are rotated)


@pytest.fixture(scope="module")
def photo() -> Path:
    return need(PHOTOS / PHOTO)


@pytest.fixture(scope="module")
def default_result(photo):
    from ferkit.explain import explain

    return explain(photo)


def _inside(shape, polygons, grow: int = 0) -> np.ndarray:
    """Boolean mask of the pixels inside any of ``polygons`` (4x2 corners), grown by ``grow`` pixels."""
    mask = np.zeros(shape[:2], np.uint8)
    for corners in polygons:
        cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    if grow:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return mask.astype(bool)


def _box_corners(box, scale):
    x, y, w, h = (v * scale for v in box)
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


# ---- the package's torch model ----------------------------------------------------------------------------------

def test_old_cards_with_a_string_architecture_are_read_as_structured(tmp_path):
    card = ModelCard(name="old", labels=["happy", "sad"],
                     architecture="fervgg {'widths': [32, 96], 'convs_per_stage': 2, 'hidden': 256}")
    assert card.architecture == {"arch": "fervgg", "args": {"widths": [32, 96], "convs_per_stage": 2, "hidden": 256}}
    assert card.arch == "fervgg"
    assert ModelCard(name="bare", labels=["happy"], architecture="small_cnn").architecture == \
        {"arch": "small_cnn", "args": {}}
    with pytest.raises(PackageError, match="unreadable architecture"):
        ModelCard(name="bad", labels=["happy"], architecture="fervgg {widths: oops")
    assert read_card(resolve_package("default")).architecture["arch"] == "fervgg"  # the shipped card, migrated


def test_default_torch_weights_agree_with_its_onnx_graph(fer2013):
    """The weights recovered from the int8 graph (benchmarks/recover_default_weights.py) classify like it."""
    from ferkit.data import decode, open_dataset
    from ferkit.explain import torch_model
    from ferkit.runtime import ModelRuntime

    card = read_card(resolve_package("default"))
    recorded = card.training["torch_weights"]["agreement_privatetest"]
    assert recorded["n"] == 3589 and recorded["top1_agreement"] >= 0.99
    entries = open_dataset(fer2013).split("PrivateTest")[::12]  # 300 images spread over the split
    images = [s.image for s in decode(entries, "gray")]
    runtime = ModelRuntime("default", calibrated=False)  # the graph's own probabilities, as torch gives them
    model = torch_model("default")
    with torch.no_grad():
        p_torch = torch.softmax(model(torch.from_numpy(runtime.preprocess(images))), 1).numpy()
    p_onnx = runtime.predict_proba(images)
    assert (p_torch.argmax(1) == p_onnx.argmax(1)).mean() >= 0.97
    assert np.abs(p_torch - p_onnx).mean() < 0.01


def test_a_package_without_torch_weights_is_one_line(tmp_path):
    from ferkit.explain import explain

    pkg = tmp_path / "onnx-only"
    shutil.copytree(resolve_package("default"), pkg)
    (pkg / "weights.safetensors").unlink()
    with pytest.raises(PackageError, match="no weights.safetensors .* re-export"):
        explain(need(PHOTOS / PHOTO), model=pkg)


# ---- every architecture's Grad-CAM layer -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_crop(photo) -> np.ndarray:
    """A real face, cropped with eye alignment (gray, 96 px; resized per architecture)."""
    from ferkit.faces import crop_face, get_detector
    from ferkit.io import decode_image

    image = decode_image(photo, "rgb", 1024).pixels
    return crop_face(image, get_detector("auto").detect(image)[0], "margin", 96, "gray", margin=0.1)


def _archs():
    from ferkit.models import available

    return available()


@pytest.mark.parametrize("arch", _archs())
def test_every_architecture_gives_a_grad_cam_on_a_real_face(arch, face_crop):
    """Random weights, so a class's CAM may be empty (all its weighted activations negative): at least one of the
    7 classes' CAMs must vary over the face."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from ferkit.models import build_model, cam_layer, min_input_size

    size = max(32, min_input_size(arch))
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, in_chans=1, input_size=size).eval()
    x = torch.from_numpy(cv2.resize(face_crop, (size, size), interpolation=cv2.INTER_AREA)).float()[None, None]
    x = (x / 255 - 0.5) / 0.5
    cam = GradCAM(model, [cam_layer(arch, model)])
    for c in range(7):  # usually the first class already gives a varied map
        heat = cam(x, [ClassifierOutputTarget(c)])[0]
        assert heat.shape == (size, size) and np.isfinite(heat).all()
        if heat.max() > heat.min():
            return
    pytest.fail(f"{arch}: every class's CAM is constant (the target layer is too late or unused)")


# ---- explain() on real photos ---------------------------------------------------------------------------------

def test_heat_lies_on_the_faces_and_the_overlay_changes_only_the_crops(default_result):
    r = default_result
    assert len(r.faces) == 3 and r.members == ["default"]
    heat = r.heat
    assert heat.shape == r.image.shape[:2] and heat.max() > 0.9
    boxes = _inside(heat.shape, [_box_corners(f.box, r.scale) for f in r.faces])
    assert heat[boxes].sum() / heat.sum() > 0.6, "most of the drawn heat must lie inside the face boxes"
    for face in r.faces:  # every face has heat of its own, mostly inside its own box
        own = _inside(heat.shape, [_box_corners(face.box, r.scale)])
        assert face.heat.max() > 0.9 and face.heat[own].sum() / face.heat.sum() > 0.5
        assert face.target == face.predicted and face.probability == max(face.scores.values())
    crops = _inside(heat.shape, [c for f in r.faces for c in f.regions], grow=2)
    changed = (r.overlay(caption=False) != r.image).any(axis=2)
    assert changed.sum() > 1000 and not changed[~crops].any(), "the overlay changed pixels outside the crops"
    assert crops.mean() < 0.15  # and those crops are a small part of the photo


def test_a_chosen_class_is_explained_for_every_face(photo):
    from ferkit.explain import Explainer

    explainer = Explainer("default", target="happiness")  # an alias of happy
    result = explainer.explain(photo)
    assert [f.target for f in result.faces] == ["happy"] * 3
    for face in result.faces:
        assert face.probability == pytest.approx(face.scores["happy"])
    with pytest.raises(UserInputError, match="no such class; its classes: angry"):
        Explainer("default", target="contempt")


def _ensemble(tmp_path: Path) -> Path:
    """`ferkit ensemble build` of the default and a copy of it cropped without alignment and with a wider margin
    (so its CAMs differ), with manual weights 0.75 / 0.25."""
    b = tmp_path / "b"
    shutil.copytree(resolve_package("default"), b)
    card = read_card(b)
    card.name, card.align, card.crop_margin = "b", False, 0.25
    write_card(b, card)
    done = _ferkit("ensemble", "build", "default", str(b), "--method", "manual", "--weights", "0.75,0.25",
                   "--out", str(tmp_path / "ens"))
    assert done.returncode == 0, done.stderr
    return tmp_path / "ens"


def test_an_ensemble_explains_per_member_and_averages_by_weight(tmp_path, photo, default_result):
    from ferkit.explain import explain

    ens = _ensemble(tmp_path)
    done = _ferkit("explain", str(photo), "--model", str(ens), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "explain.json").read_text())[0]
    stem = "face_recognition__obama_and_biden"
    assert record["member_overlays"] == {"default": f"{stem}.default.png", "b": f"{stem}.b.png"}
    assert all((tmp_path / "out" / name).is_file() for name in [record["overlay"], *record["member_overlays"].values()])
    result = explain(photo, model=ens)
    assert result.members == ["default", "b"] and len(result.faces) == 3
    for face, single in zip(result.faces, default_result.faces):
        heat = face.member_heat
        assert face.box == single.box
        if face.target != single.target:  # the ensemble may pick another class: explain the default for that one
            single = next(f for f in explain(photo, target=face.target).faces if f.box == face.box)
        assert np.allclose(heat["default"], single.heat, atol=1e-5)  # the first member is the default itself
        assert not np.allclose(heat["b"], heat["default"], atol=0.05)
        assert np.allclose(face.heat, 0.75 * heat["default"] + 0.25 * heat["b"], atol=1e-5)
        pa, pb = (m["probability"] for m in face.members)
        assert face.probability == pytest.approx(0.75 * pa + 0.25 * pb, abs=1e-3)
        assert len(face.regions) == 2  # each member's crop
    members_heat = _inside(result.heat.shape, [_box_corners(f.box, result.scale) for f in result.faces])
    assert result.heat[members_heat].sum() / result.heat.sum() > 0.5


# ---- the command ------------------------------------------------------------------------------------------------

def _ferkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit.cli", *args], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})


def test_explain_command_writes_overlays_csv_and_json(tmp_path, photo, default_result):
    out = tmp_path / "out"
    done = _ferkit("explain", str(photo), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(open(out / "faces.csv")))
    assert [(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"])) for r in rows] == [f.box for f in default_result.faces]
    assert [r["class"] for r in rows] == [f.target for f in default_result.faces]
    record = json.loads((out / "explain.json").read_text())[0]
    assert record["overlay"] == rows[0]["overlay"] == "face_recognition__obama_and_biden.png"
    overlay = cv2.cvtColor(cv2.imread(str(out / record["overlay"])), cv2.COLOR_BGR2RGB)
    h, w = default_result.image.shape[:2]
    assert overlay.shape[1] == w and overlay.shape[0] > h  # the photo, then the caption strip
    assert np.array_equal(overlay[:h], default_result.overlay(caption=False))
    assert "face 1 at x=736 y=443" in done.stdout or "face 1 at" in done.stdout


def test_class_visualisation_raises_each_class_well_above_its_start(tmp_path):
    out = tmp_path / "classes"
    done = _ferkit("explain", "--classes", "--steps", "25", "--out", str(out))
    assert done.returncode == 0, done.stderr
    grid = cv2.imread(str(out / "classes-default.png"))
    assert grid is not None and grid.shape[0] > 2 * 192 and grid.shape[1] == 4 * 192
    probs = json.loads((out / "classes.json").read_text())["models"]["default"]
    assert list(probs) == read_card(resolve_package("default")).labels
    for label, p in probs.items():
        assert p["probability"] > max(0.8, p["start_probability"] + 0.5), (label, p)
    done = _ferkit("explain", str(need(PHOTOS / PHOTO)), "--classes", "--out", str(out))
    assert done.returncode == 1 and done.stderr.strip().startswith("ferkit: error: --classes draws each class")


def test_torch_model_without_torch_is_one_line_naming_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from ferkit.errors import MissingExtraError\n"
            "from ferkit.explain import torch_model\n"
            "try:\n    torch_model('default')\nexcept MissingExtraError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "needs the 'explain' extra: pip install \"ferkit[explain]\"" in done.stdout
