"""An ensemble package is accepted like any model: `ferkit ensemble build`, then analyze, evaluate, bench, rank,
models and the HTTP API with it, on real photos and real FER2013 images (members: the shipped default, a copy
cropping the bare box, and the shipped 8-class FER+ model, so label sets, label orders and crop specs differ)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ferkit import labels as L
from ferkit.cli import main
from ferkit.packages import WEIGHTS_DIR

from .conftest import PHOTOS, need

PHOTOS_USED = ["dlib__2008_001009.jpg", "face_recognition__biden.jpg", "face_recognition__two_people.jpg"]


def cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS_USED:
        shutil.copy(need(PHOTOS) / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ensemble")
    boxed = tmp / "boxed"
    shutil.copytree(WEIGHTS_DIR / "default", boxed)
    card = json.loads((boxed / "card.json").read_text())
    (boxed / "card.json").write_text(json.dumps(card | {"name": "boxed", "crop_policy": "box"}))
    result = cli("ensemble", "build", "default", boxed, "ferplus", "--method", "manual", "--weights", "0.5,0.3,0.2",
                 "--out", tmp / "ens")
    assert result.exit_code == 0, result.output
    assert "3 members" in result.output and "contempt" in result.output
    return tmp / "ens"


def test_analyze_accepts_an_ensemble(ensemble, photos, tmp_path):
    result = cli("analyze", photos, "--model", ensemble, "--detector", "dlib", "--json", tmp_path / "r.json",
                 "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    images = json.loads((tmp_path / "r.json").read_text())
    faces = [f for im in images for f in im["faces"]]
    assert len(faces) >= 4 and all(im["model"] == "ens" for im in images)
    for face in faces:
        assert list(face["scores"]) == list(L.BASIC_8)  # the union of the members' labels, by name
        assert sum(face["scores"].values()) == pytest.approx(1, abs=1e-4)
    # the journal is keyed on the ensemble (its cards and every member's graph)
    settings = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])["settings"]
    assert settings["model"] == "ens" and settings["tta"] == "flip" and len(settings["model_digest"]) == 16


def test_evaluate_accepts_an_ensemble(ensemble, small_fer_tree, tmp_path):
    result = cli("evaluate", small_fer_tree, "--model", ensemble, "--split", "all", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["n"] == len(list(small_fer_tree.rglob("*.jpg"))) and report["tta"] == "flip"
    assert report["confusion"]["labels"] == list(L.BASIC_8)
    assert 0.35 < report["accuracy"] <= 1  # 7 classes: chance is ~0.14


def test_bench_accepts_an_ensemble(ensemble, photos, tmp_path):
    result = cli("bench", photos, "--model", ensemble, "--detector", "dlib", "--repeat", "1", "--batches", "1,8",
                 "--min-seconds", "0", "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["model"] == "ens" and report["tta"] == "flip" and report["faces"] >= 4
    assert [c["batch"] for c in report["classify"]] == [1, 8] and all(c["faces_per_s"] > 0 for c in report["classify"])


def test_rank_accepts_an_ensemble(ensemble, photos):
    from ferkit.rank import rank_paths
    from ferkit.recognizer import Recognizer

    with Recognizer(ensemble, "dlib", workers=1) as recognizer:
        summary = rank_paths([photos], recognizer, by="positive", progress=False)
    assert len(summary.ranking) == len(PHOTOS_USED)
    scores = [p.score for p in summary.ranking if p.score is not None]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_models_lists_members_method_and_weights(ensemble):
    result = cli("models", ensemble, "default")
    assert result.exit_code == 0, result.output
    assert "ensemble, method manual, 3 members: default (weight 0.5" in result.output
    assert "boxed (weight 0.3" in result.output and "ferplus (weight 0.2, 8 labels)" in result.output
    assert "box + margin 0.1" in result.output


def test_missing_member_is_one_line(ensemble, photos, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(ensemble, broken)
    shutil.rmtree(broken / "members" / "boxed")
    result = CliRunner().invoke(main, ["analyze", str(photos), "--model", str(broken)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "member 'boxed' is missing" in lines[0]


def test_serve_api_takes_an_ensemble_and_a_tta_per_request(ensemble, photos):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ferkit.serve.app import create_app
    from ferkit.serve.config import ServeConfig

    with TestClient(create_app(ServeConfig(models=(str(ensemble),), detector="dlib"))) as client:
        models = client.get("/v1/models").json()
        assert models[0]["kind"] == "ensemble" and models[0]["method"] == "manual" and models[0]["tta"] == "flip"
        assert [m["name"] for m in models[0]["members"]] == ["default", "boxed", "ferplus"]
        data = (photos / PHOTOS_USED[1]).read_bytes()
        flip = client.post("/v1/analyze", files={"file": ("a.jpg", data)}).json()
        none = client.post("/v1/analyze?tta=none", files={"file": ("a.jpg", data)}).json()
        assert len(flip["faces"]) == len(none["faces"]) == 1
        assert not np.allclose(list(flip["faces"][0]["scores"].values()), list(none["faces"][0]["scores"].values()))
        bad = client.post("/v1/analyze?tta=sideways", files={"file": ("a.jpg", data)})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_tta" and "tencrop" in bad.json()["message"]
