"""`ferkit rank` (photo-book ranking, seed 003) and `ferkit bench` on real photos with the shipped default model."""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ferkit.cli import main
from ferkit.packages import WEIGHTS_DIR
from ferkit.rank import photo_score, rank_results, resolve_target
from ferkit.results import Face, ImageResult
from tests.conftest import PHOTOS, need

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
# 10 faces in 6 photos (dlib finds them all, haar 9; see benchmarks/detectors.py)
GOOD = ["face_recognition__obama.jpg", "face_recognition__two_people.jpg", "face_recognition__biden.jpg",
        "dlib__2008_001322.jpg", "face_recognition__kit_with_rose.jpg", "face_recognition__johnsnow_test1.jpg"]


def _need_default_model() -> None:
    if not (WEIGHTS_DIR / "default" / "model.onnx").is_file():
        pytest.skip(f"needs the shipped default model in {WEIGHTS_DIR / 'default'} (not shipped yet)")


@pytest.fixture(scope="module")
def recognizer():
    from ferkit.recognizer import Recognizer

    need(PHOTOS)
    _need_default_model()
    return Recognizer()


@pytest.fixture
def photo_folder(tmp_path):
    """Six real photos, two photos without faces (a crop of a photo's background, a plain image), a corrupt file."""
    need(PHOTOS)
    folder = tmp_path / "book"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(PHOTOS / name, folder / name)
    Image.open(PHOTOS / "face_recognition__obama.jpg").crop((0, 0, 300, 300)).save(folder / "zz_flag.jpg")
    Image.new("RGB", (320, 240), (120, 160, 200)).save(folder / "aa_sky.png")
    good = (PHOTOS / GOOD[0]).read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 4])
    return folder


def _face(box, **scores):
    full = dict.fromkeys(LABELS, 0.0)
    full.update(scores)
    return Face(box, full)


def test_photo_score_is_the_weighted_mean_of_the_target_probability():
    big_happy = _face((0, 0, 100, 100), happy=0.9, neutral=0.1)  # area 10000, confidence 0.9
    small_sad = _face((0, 0, 10, 10), sad=0.6, happy=0.4)  # area 100, confidence 0.6
    faces = [big_happy, small_sad]
    w1, w2 = 10000 * 0.9, 100 * 0.6
    assert photo_score(faces) == pytest.approx((w1 * 0.9 + w2 * 0.4) / (w1 + w2))
    assert photo_score(faces, weight="area") == pytest.approx((10000 * 0.9 + 100 * 0.4) / 10100)
    assert photo_score(faces, weight="confidence") == pytest.approx((0.9 * 0.9 + 0.6 * 0.4) / 1.5)
    assert photo_score(faces, weight="none") == pytest.approx(0.65)
    assert photo_score(faces, "negative", "none") == pytest.approx(0.3)
    assert photo_score(faces, "neutral", "none") == pytest.approx(0.05)
    surprised = _face((0, 0, 10, 10), surprise=0.5, neutral=0.3, happy=0.2)
    assert photo_score([surprised], "group:neutral") == pytest.approx(0.8)
    assert photo_score([]) is None
    with pytest.raises(ValueError, match="weight"):
        photo_score(faces, weight="height")


def test_rank_targets_and_order():
    assert resolve_target("Happiness", LABELS) == "happy"
    assert resolve_target("positive", LABELS) == "positive"
    assert resolve_target("group:neutral", LABELS) == "group:neutral"
    with pytest.raises(ValueError, match="contempt"):
        resolve_target("contempt", LABELS)  # a label this 7-class model lacks
    results = [ImageResult("b.jpg", 10, 10, []), ImageResult("a.jpg", 10, 10, []),
               ImageResult("low.jpg", 10, 10, [_face((0, 0, 5, 5), happy=0.2, sad=0.8)]),
               ImageResult("high.jpg", 10, 10, [_face((0, 0, 5, 5), happy=0.7, sad=0.3)]),
               ImageResult("bad.jpg", 0, 0, [], error="bad.jpg: corrupt")]
    ranked = rank_results(results)
    assert [p.result.source for p in ranked] == ["high.jpg", "low.jpg", "a.jpg", "b.jpg"]
    assert [p.rank for p in ranked] == [1, 2, 3, 4] and ranked[2].score is None


def test_cli_rank_folder_writes_ranking_and_contact_sheet_and_resumes(tmp_path, photo_folder):
    _need_default_model()
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(main, ["rank", str(photo_folder), "--out", str(out), "--top", "5", "--columns", "3"])
    assert first.exit_code == 1, first.output  # the corrupt file
    skipped = re.findall(r"skipped (\S+): ", first.output)
    assert [os.path.basename(s) for s in skipped] == ["broken.jpg"]

    with open(out / "ranking.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and [int(r["rank"]) for r in rows] == list(range(1, 9))
    by_name = {os.path.basename(r["source"]): r for r in rows}
    assert "broken.jpg" not in by_name
    scored = [r for r in rows if r["score"] != ""]
    assert {os.path.basename(r["source"]) for r in scored} == set(GOOD)
    scores = [float(r["score"]) for r in scored]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert [os.path.basename(r["source"]) for r in rows[6:]] == ["aa_sky.png", "zz_flag.jpg"]  # no faces: last
    assert all(r["faces"] == "0" and r["score"] == "" for r in rows[6:])

    # the scores are photo_score of the faces analyze recorded (default: positive, area x confidence)
    results = {os.path.basename(r["source"]): ImageResult.from_dict(r)
               for r in json.loads((out / "results.json").read_text())}
    for name in GOOD:
        assert int(by_name[name]["faces"]) == len(results[name].faces) >= 1
        assert float(by_name[name]["score"]) == pytest.approx(photo_score(results[name].faces), abs=1e-5)
    assert sum(len(r.faces) for r in results.values()) in (9, 10)  # dlib finds all 10; haar (no dlib) misses one

    with Image.open(out / "contact_sheet.jpg") as sheet:
        assert sheet.size == (3 * 256, 2 * (256 + 28))  # 5 photos in 3 columns
        pixels = np.asarray(sheet.convert("L"))
    assert pixels[:256, :256].std() > 10  # a thumbnail, not a blank cell
    assert "photos without faces" in first.output and "1 failed" in first.output

    second = runner.invoke(main, ["rank", str(photo_folder), "--out", str(out), "--top", "5", "--columns", "3"])
    assert "8 already done" in second.output and "0 analysed" in second.output
    with open(out / "ranking.csv", newline="") as f:
        assert list(csv.DictReader(f)) == rows

    third = runner.invoke(main, ["rank", str(photo_folder), "--out", str(out), "--by", "happy", "--weight", "none"])
    with open(out / "ranking.csv", newline="") as f:
        happy = {os.path.basename(r["source"]): r for r in csv.DictReader(f)}
    assert "ranked by happy (weight none)" in third.output
    for name in GOOD:
        faces = results[name].faces
        assert float(happy[name]["score"]) == pytest.approx(np.mean([f.scores["happy"] for f in faces]), abs=1e-5)


def test_cli_rank_rejects_an_unknown_target(photo_folder):
    _need_default_model()
    result = CliRunner().invoke(main, ["rank", str(photo_folder), "--by", "joyful"])
    assert result.exit_code == 1 and "cannot rank by 'joyful'" in result.output


def test_bench_times_every_stage_and_counts_the_faces_analyze_finds(recognizer):
    from ferkit.bench import STAGES, bench_paths, format_report

    files = [PHOTOS / n for n in GOOD[:3]]
    report = bench_paths(files, recognizer, repeat=2, batches=(1, 32), min_seconds=0.05)
    assert report.photos == 3 and report.failed == []
    assert report.faces == sum(len(r.faces) for r in recognizer.analyze(files)) == 4
    assert all(report.stage_ms[s] > 0 for s in STAGES)
    assert 0 < report.photo_ms["p50"] <= report.photo_ms["p90"] <= report.photo_ms["max"]
    # the stages add up to (nearly all of) the end-to-end time, never to more
    assert 0.5 * report.photo_ms["mean"] < sum(report.stage_ms.values()) <= 1.05 * report.photo_ms["mean"]
    assert report.faces_per_s > 0 and report.folder["faces"] == 4 and report.folder["faces_per_s"] > 0
    assert [c["batch"] for c in report.classify] == [1, 32] and all(c["faces_per_s"] > 0 for c in report.classify)
    text = format_report(report)
    for needle in ("decode", "detect", "align + crop", "classify", "p50", "p90", "faces/s", "classification only"):
        assert needle in text


def test_cli_bench_prints_a_table_and_writes_json(tmp_path):
    _need_default_model()
    need(PHOTOS)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(PHOTOS / GOOD[1]), str(broken), "--repeat", "1", "--batches",
                                       "1,16", "--min-seconds", "0.05", "--json", str(out)])
    assert result.exit_code == 1, result.output  # the unreadable file is reported, the rest is still timed
    assert "skipped" in result.output and "broken.jpg" in result.output
    for needle in ("decode", "detect", "align + crop", "classify", "p50", "p90", "classification only"):
        assert needle in result.output
    data = json.loads(out.read_text())
    assert data["photos"] == 1 and data["faces"] == 2 and data["photo_ms"]["p50"] > 0
    assert set(data["stage_ms"]) == {"decode", "detect", "align_crop", "classify"}
    assert [c["batch"] for c in data["classify"]] == [1, 16]
