"""`Recognizer` and `ferkit analyze` end to end on real photos with the shipped default model."""

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ferkit.cli import main
from ferkit.io import ImageError
from ferkit.recognizer import Recognizer
from tests.conftest import PHOTOS, REPO, need

PORTRAIT = "face_recognition__obama.jpg"
TWO_PEOPLE = "face_recognition__two_people.jpg"


@pytest.fixture(scope="module")
def recognizer():
    need(PHOTOS)
    return Recognizer()


def test_portrait_has_one_face_with_a_full_distribution(recognizer):
    result = recognizer.analyze(PHOTOS / PORTRAIT)
    assert len(result.faces) == 1
    face = result.faces[0]
    x, y, w, h = face.box
    assert 0 <= x < x + w <= result.width and 0 <= y < y + h <= result.height
    assert list(face.scores) == recognizer.labels
    assert sum(face.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.emotion == max(face.scores, key=face.scores.get) and face.confidence == face.scores[face.emotion]
    assert face.group in ("positive", "neutral", "negative")
    assert {"left_eye", "right_eye"} <= set(face.landmarks) or recognizer.detector.name == "haar"


def test_batches_equal_single_images(recognizer):
    paths = [PHOTOS / PORTRAIT, PHOTOS / TWO_PEOPLE, PHOTOS / "face_recognition__biden.jpg"]
    together = recognizer.analyze(paths)
    assert [len(r.faces) for r in together] == [1, 2, 1]
    for path, batched in zip(paths, together):
        alone = recognizer.analyze(path)
        for a, b in zip(alone.faces, batched.faces):
            assert a.box == b.box
            assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_parallel_detection_equals_one_thread(recognizer):
    """Every photo (group shots included) gives the same faces with several detection threads as with one: each
    thread has its own dlib detector (not safe to share), MTCNN one thread-safe ONNX Runtime session per graph."""
    photos = sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    serial = Recognizer(detector=recognizer.detector, workers=1)
    parallel = Recognizer(detector=recognizer.detector, workers=3, images_per_batch=8)
    if not recognizer.detector.concurrent:
        assert parallel.workers == 1
        return
    assert parallel.workers == 3
    one, many = serial.analyze(photos), parallel.analyze(photos)
    assert [r.source for r in many] == [r.source for r in one]
    assert sum(len(r.faces) for r in one) >= 40
    for a, b in zip(one, many):
        assert [f.box for f in a.faces] == [f.box for f in b.faces], a.source
        assert [f.landmarks for f in a.faces] == [f.landmarks for f in b.faces], a.source
        for fa, fb in zip(a.faces, b.faces):
            assert fa.scores == pytest.approx(fb.scores, abs=1e-5)
    assert parallel.timings["images"] == len(photos) and parallel.timings["detect"] > 0
    with pytest.raises(ValueError, match="workers"):
        Recognizer(workers=0)


def test_arrays_gray_and_rgba_inputs(recognizer, tmp_path):
    rgb = np.asarray(Image.open(PHOTOS / PORTRAIT).convert("RGB"))
    from_array = recognizer.analyze(rgb)
    assert len(from_array.faces) == 1 and from_array.source == "<array>"
    gray = np.asarray(Image.open(PHOTOS / PORTRAIT).convert("L"))
    assert len(recognizer.analyze(gray).faces) == 1
    Image.open(PHOTOS / PORTRAIT).convert("RGBA").save(tmp_path / "rgba.png")
    assert len(recognizer.analyze(tmp_path / "rgba.png").faces) == 1


def test_no_face_is_an_empty_list_not_an_error(recognizer):
    blank = np.full((240, 320, 3), 127, np.uint8)
    result = recognizer.analyze(blank)
    assert result.faces == [] and result.error is None


def test_dataframe_has_a_row_per_face(recognizer):
    df = recognizer.analyze(PHOTOS / TWO_PEOPLE).to_dataframe()
    assert len(df) == 2
    assert {"x", "y", "w", "h", "emotion", "confidence", "group", "happy", "neutral"} <= set(df.columns)


def test_single_bad_path_raises_clear_error(recognizer, tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        recognizer.analyze(tmp_path / "missing.jpg")


def _bad_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in (PORTRAIT, TWO_PEOPLE):
        shutil.copy(PHOTOS / name, folder / name)
    good = (PHOTOS / PORTRAIT).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    Image.new("1", (30000, 30000)).save(folder / "huge.png")
    return folder


def test_cli_folder_with_bad_files_reports_each_and_resumes(tmp_path):
    need(PHOTOS)
    folder = _bad_folder(tmp_path)
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(main, ["analyze", str(folder), "--out", str(out)])
    assert first.exit_code == 1
    skipped = [line for line in first.output.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 4, first.output
    text = "\n".join(skipped)
    for needle in ("truncated.jpg", "empty.jpg", "notes.png", "huge.png"):
        assert needle in text
    assert "too large" in text and "empty file" in text
    assert re.search(r"2 images, 3 faces, 4 failed", first.output)

    results = json.loads((out / "results.json").read_text())
    assert sorted(len(r["faces"]) for r in results) == [1, 2]
    rows = (out / "faces.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("source,face,x,y,w,h,emotion,confidence,group")
    assert len(list((out / "annotated").glob("*.jpg"))) == 2

    second = runner.invoke(main, ["analyze", str(folder), "--out", str(out)])
    assert "0 images, 0 faces, 2 already done" in second.output
    assert json.loads((out / "results.json").read_text()) == results


def test_cli_prints_faces_and_json_to_stdout():
    need(PHOTOS)
    result = CliRunner().invoke(main, ["analyze", str(PHOTOS / TWO_PEOPLE)])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"face \d at x=", result.output)) == 2
    as_json = CliRunner().invoke(main, ["analyze", str(PHOTOS / TWO_PEOPLE), "--json", "-"])
    payload = json.loads(as_json.output[as_json.output.index("["): as_json.output.rindex("]") + 1])
    assert len(payload[0]["faces"]) == 2 and set(payload[0]["faces"][0]) >= {"box", "scores", "emotion", "group"}


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    need(PHOTOS)
    readme = (REPO / "README.md").read_text()
    code = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    shutil.copy(PHOTOS / PORTRAIT, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})


def test_evaluate_faces_detect_on_whole_images(tmp_path, small_fer_tree):
    """FER2013 faces upscaled to 'photos': detection finds most, the rest are counted as no_face, never dropped."""
    import cv2

    photos = tmp_path / "photos"
    for src in small_fer_tree.rglob("*.jpg"):
        dst = photos / src.parent.name / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        big = cv2.resize(cv2.imread(str(src), cv2.IMREAD_GRAYSCALE), (192, 192), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(dst), big)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["evaluate", str(photos), "--split", "all", "--faces", "detect",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] + report["skipped"].get("no_face", 0) == 7 * 12
    assert report["n"] > 7 * 12 // 2
