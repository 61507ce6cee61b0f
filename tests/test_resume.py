"""Reruns into an existing --out resume the same work, and no single input aborts a batch (analyze and rank).

Every test builds its bad situation from copies of real photos (../shared/data/photos) and runs the shipped default
model; the concurrency tests run real `ferkit` processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from filelock import FileLock

from ferkit.analyze import MAX_NAME_BYTES, analyze_paths
from ferkit.cli import main
from ferkit.errors import UserInputError
from ferkit.io import atomic_write_csv
from ferkit.journal import JOURNAL, LOCK
from ferkit.rank import rank_paths
from ferkit.recognizer import Recognizer
from tests.conftest import PHOTOS, REPO, need

# small real photos (360-630 px), each with at least one face dlib and haar find
SMALL = ["dlib__2008_001009.jpg", "dlib__2008_001322.jpg", "dlib__2008_002079.jpg", "dlib__2008_002470.jpg",
         "face_recognition__kit_harington_john2.jpeg"]


@pytest.fixture(scope="module")
def recognizer():
    need(PHOTOS)
    return Recognizer(workers=1)


@pytest.fixture
def photos(tmp_path) -> Path:
    need(PHOTOS)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in SMALL[:3]:
        shutil.copy(PHOTOS / name, folder / name)
    return folder


def _results(out: Path) -> dict[str, dict]:
    return {r["source"]: r for r in json.loads((out / "results.json").read_text())}


def _journal_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / JOURNAL).read_text().splitlines()]


def _ferkit(*args: str, env_extra: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ferkit.cli", *args], capture_output=True, env=env, **kwargs)


# --- runs that resume must resume the same work ------------------------------------------------------------------


def test_rerun_with_other_settings_is_refused_and_force_redoes(photos, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(main, ["analyze", str(photos), "--out", str(out), "--no-annotate"])
    assert first.exit_code == 0, first.output
    before = (out / "results.json").read_text()

    for args, needle in ((["--tta", "none"], "--tta flip, not none"), (["--min-face", "40"], "--min-face 0, not 40"),
                         (["--max-faces", "1"], "--max-faces None, not 1"),
                         (["--detector", "haar"], "--detector mtcnn, not haar")):
        refused = runner.invoke(main, ["analyze", str(photos), "--out", str(out), *args])
        assert refused.exit_code == 1, refused.output
        lines = [line for line in refused.output.splitlines() if line.strip()]
        assert len(lines) == 1 and needle in lines[0] and "--force" in lines[0], refused.output
        assert (out / "results.json").read_text() == before
    # the same settings resume
    same = runner.invoke(main, ["analyze", str(photos), "--out", str(out), "--no-annotate"])
    assert "0 images, 0 faces, 3 already done" in same.output

    forced = runner.invoke(main, ["analyze", str(photos), "--out", str(out), "--max-faces", "1", "--force",
                                  "--no-annotate"])
    assert forced.exit_code == 0, forced.output
    assert "3 images" in forced.output and "already done" not in forced.output
    assert _journal_lines(out)[0]["settings"]["max_faces"] == 1
    assert all(len(r["faces"]) <= 1 for r in _results(out).values())
    assert len(_results(out)) == 3


def test_another_model_or_a_changed_package_is_refused(photos, tmp_path, recognizer):
    from ferkit.packages import WEIGHTS_DIR

    out = tmp_path / "out"
    analyze_paths([photos / SMALL[0]], recognizer, out, annotated=False, progress=False)
    package = tmp_path / "other"
    shutil.copytree(WEIGHTS_DIR / "default", package)
    # a byte-identical copy is the same model: it resumes
    copy = analyze_paths([photos / SMALL[0]], Recognizer(package, recognizer.detector), out, progress=False,
                         annotated=False)
    assert copy.skipped_done == 1
    card = json.loads((package / "card.json").read_text())
    card["crop_margin"] = 0.3
    (package / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserInputError, match="another version of model default"):
        analyze_paths([photos / SMALL[0]], Recognizer(package, recognizer.detector), out, progress=False)
    card["name"] = "mine"
    (package / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserInputError, match="--model default, not mine"):
        rank_paths([photos / SMALL[0]], Recognizer(package, recognizer.detector), out, progress=False)


def test_a_journal_without_settings_is_refused(photos, tmp_path, recognizer):
    """A journal from a ferkit that recorded no settings cannot be trusted to match: refused, --force redoes it."""
    out = tmp_path / "out"
    analyze_paths([photos], recognizer, out, annotated=False, progress=False)
    journal = out / JOURNAL
    journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines()[1:]))
    with pytest.raises(UserInputError, match="did not record its settings.*--force"):
        analyze_paths([photos], recognizer, out, annotated=False, progress=False)
    redone = analyze_paths([photos], recognizer, out, annotated=False, progress=False, force=True)
    assert redone.images == 3 and "settings" in _journal_lines(out)[0]


def test_every_spelling_of_a_file_is_one_input(photos, tmp_path, recognizer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.jpg").symlink_to(photos / SMALL[0])
    spellings = [f"photos/{SMALL[0]}", f"./photos/{SMALL[0]}", str(photos / SMALL[0]), "link.jpg",
                 f"photos/../photos/{SMALL[0]}"]
    alone = analyze_paths(spellings, recognizer, progress=False)
    assert alone.images == 1 and [r.source for r in alone.results] == [os.path.realpath(photos / SMALL[0])]

    out = tmp_path / "out"
    first = analyze_paths(spellings + ["photos"], recognizer, out, progress=False)
    assert first.images == 3 and first.skipped_done == 0
    assert sorted(_results(out)) == sorted(str((photos / n).resolve()) for n in SMALL[:3])
    again = analyze_paths(["link.jpg", str(photos)], recognizer, out, progress=False)
    assert again.images == 0 and again.skipped_done == 3
    assert len(list((out / "annotated").iterdir())) == 3


def test_deleted_and_corrupted_inputs_leave_the_results(photos, tmp_path, recognizer):
    out = tmp_path / "out"
    analyze_paths([photos], recognizer, out, progress=False)
    assert len(_results(out)) == 3 and len(list((out / "annotated").iterdir())) == 3
    gone, broken, kept = (photos / n for n in SMALL[:3])
    gone.unlink()
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    failed = []
    summary = analyze_paths([photos], recognizer, out, on_error=failed.append, progress=False)
    assert summary.skipped_done == 1 and summary.images == 0
    assert len(failed) == 1 and broken.name in failed[0]
    assert list(_results(out)) == [str(kept.resolve())]
    assert [p.name for p in (out / "annotated").iterdir()] == [Path(kept.name).stem + ".jpg"]
    assert (out / "faces.csv").read_text().count(kept.name) >= 1
    assert broken.name not in (out / "faces.csv").read_text()
    # a file replaced by another photo is redone, and its new faces replace the old ones
    shutil.copy(PHOTOS / SMALL[4], broken)
    redo = analyze_paths([photos], recognizer, out, progress=False)
    assert redo.images == 1 and redo.skipped_done == 1
    assert _results(out)[str(broken.resolve())]["width"] == 630


def test_journal_cut_by_a_kill_is_repaired(photos, tmp_path, recognizer):
    out = tmp_path / "out"
    analyze_paths([photos], recognizer, out, annotated=False, progress=False)
    journal = out / JOURNAL
    data = journal.read_bytes()
    journal.write_bytes(data[:-40])  # the last record loses its end and its newline
    summary = analyze_paths([photos], recognizer, out, annotated=False, progress=False)
    assert summary.images == 1 and summary.skipped_done == 2
    lines = journal.read_text().splitlines()
    assert len(lines) == 1 + 3 and all(json.loads(line) for line in lines)
    assert len(_results(out)) == 3


def test_a_busy_output_folder_is_refused_at_once(photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / LOCK):
        started = time.monotonic()
        busy = _ferkit("analyze", str(photos), "--out", str(out), timeout=120)
        assert busy.returncode == 1
        assert busy.stderr.decode().strip().splitlines()[-1].startswith(f"ferkit: error: {out} is in use by another")
        assert not (out / JOURNAL).exists() and time.monotonic() - started < 60


def test_two_processes_into_one_folder_lose_nothing(tmp_path):
    """Two real `ferkit analyze` runs into one --out: each either finishes with all its results kept, or stops at
    once with the one-line reason; what a finished run reported is always in results.json."""
    need(PHOTOS)
    sets = {}
    for part, names in (("a", SMALL[:3]), ("b", SMALL[3:])):
        folder = tmp_path / part
        folder.mkdir()
        for name in names:
            shutil.copy(PHOTOS / name, folder / name)
        sets[part] = folder
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    procs = {part: subprocess.Popen([sys.executable, "-m", "ferkit.cli", "analyze", str(folder), "--out", str(out),
                                     "--no-annotate", "--workers", "1"], stderr=subprocess.PIPE, env=env)
             for part, folder in sets.items()}
    finished = []
    for part, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            finished.append(part)
        else:
            assert proc.returncode == 1 and "is in use by another ferkit run" in err.decode(), err.decode()
    assert finished, "one of the two runs must finish"
    results = _results(out)
    for part in finished:
        assert {str(p.resolve()) for p in sets[part].iterdir()} <= set(results)


# --- nothing aborts a whole batch -------------------------------------------------------------------------------


def test_nested_folders_with_a_long_joined_name(tmp_path, recognizer):
    need(PHOTOS)
    root = tmp_path / "album"
    deep = root / ("a" * 100) / ("é" * 60) / ("c" * 100)
    deep.mkdir(parents=True)
    shutil.copy(PHOTOS / SMALL[0], deep / ("d" * 100 + ".jpg"))
    shutil.copy(PHOTOS / SMALL[1], root / "short.jpg")
    out = tmp_path / "out"
    first = analyze_paths([root], recognizer, out, progress=False)
    assert first.images == 2 and not first.failed
    names = sorted(p.name for p in (out / "annotated").iterdir())
    assert "short.jpg" in names and all(len(os.fsencode(n)) <= MAX_NAME_BYTES for n in names)
    assert analyze_paths([root], recognizer, out, progress=False).skipped_done == 2


def test_a_file_deleted_while_the_batch_runs(photos, tmp_path, recognizer, monkeypatch):
    """One file vanishes after the listing and before it is read, another right after it was analysed, a FIFO poses
    as a photo: one error line each, every other file analysed, outputs written."""
    files = sorted(photos.iterdir())
    os.mkfifo(photos / "pipe.jpg")  # would block a decoder for ever
    real = recognizer.analyze_with_images

    def deleting(sources):
        sources = list(sources)
        files[2].unlink()
        for i, item in enumerate(real(sources)):
            if i == 0:
                files[0].unlink()
            yield item

    monkeypatch.setattr(recognizer, "analyze_with_images", deleting)
    failed = []
    out = tmp_path / "out"
    summary = analyze_paths([photos], recognizer, out, on_error=failed.append, progress=False)
    assert summary.images == 2 and len(failed) == 2, failed
    assert "pipe.jpg: not a regular file" in failed[0]
    assert files[2].name in failed[1] and "no such file" in failed[1]
    assert len(_results(out)) == 2
    monkeypatch.undo()
    # the next run drops the file deleted mid-run: results.json holds only what still exists
    again = analyze_paths([photos], recognizer, out, progress=False)
    assert again.skipped_done == 1 and list(_results(out)) == [str(files[1].resolve())]


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux file systems take names that are not UTF-8")
@pytest.mark.parametrize("command", ["analyze", "rank"])
def test_a_file_name_that_is_not_utf8(command, tmp_path):
    need(PHOTOS)
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"caf\xe9 \xff.jpg")
    shutil.copy(PHOTOS / SMALL[0], raw)
    shutil.copy(PHOTOS / SMALL[1], folder / "fine.jpg")
    out = tmp_path / "out"
    # a UTF-8 locale: stdout is strict UTF-8 there, unlike the C locale's surrogateescape
    run = _ferkit(command, str(folder), "--out", str(out), env_extra={"LC_ALL": "C.UTF-8"}, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    sources = {os.fsencode(s) for s in _results(out)}
    assert raw in sources and len(sources) == 2
    assert raw in (out / "faces.csv").read_bytes()
    if command == "rank":
        assert raw in (out / "ranking.csv").read_bytes() and (out / "contact_sheet.jpg").is_file()
    else:
        assert len(list((out / "annotated").iterdir())) == 2
    assert not [p for p in out.rglob("*.tmp")]


def test_same_stem_and_same_name_in_two_folders_keep_their_annotated_images(tmp_path, recognizer):
    need(PHOTOS)
    for folder, name, src in (("one", "photo.jpg", SMALL[0]), ("one", "photo.png", SMALL[1]),
                              ("two", "photo.jpg", SMALL[2])):
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(PHOTOS / src, tmp_path / folder / name)
    out = tmp_path / "out"
    summary = analyze_paths([tmp_path / "one", tmp_path / "two"], recognizer, out, progress=False)
    assert summary.images == 3
    annotated = sorted((out / "annotated").iterdir())
    assert len(annotated) == 3 and len({p.read_bytes() for p in annotated}) == 3
    # a later run adds the same name from yet another folder without overwriting the earlier ones
    (tmp_path / "three").mkdir()
    shutil.copy(PHOTOS / SMALL[3], tmp_path / "three" / "photo.jpg")
    analyze_paths([tmp_path / "three"], recognizer, out, progress=False)
    assert len(list((out / "annotated").iterdir())) == 4
    records = _journal_lines(out)[1:]
    assert len({r["annotated"] for r in records}) == 4


def test_json_into_a_missing_folder_is_settled_before_the_work(photos, tmp_path):
    runner = CliRunner()
    target = tmp_path / "new" / "sub" / "r.json"
    ok = runner.invoke(main, ["analyze", str(photos / SMALL[0]), "--json", str(target)])
    assert ok.exit_code == 0, ok.output
    assert len(json.loads(target.read_text())) == 1
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    bad = runner.invoke(main, ["analyze", str(photos), "--out", str(out), "--json", str(tmp_path / "afile" / "r.json")])
    assert bad.exit_code == 1 and "cannot create its folder" in bad.output
    assert not out.exists()


def test_atomic_csv_writer_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "t.csv"
    atomic_write_csv(path, ["a", "b"], [{"a": 1, "b": "x"}])

    def rows():
        yield {"a": 2, "b": "y"}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_csv(path, ["a", "b"], rows())
    assert path.read_text().splitlines() == ["a,b", "1,x"] and not list(tmp_path.glob("*.tmp"))
    atomic_write_csv(path, ["a"], [{"a": "caf\udce9"}])
    assert path.read_bytes().splitlines()[1] == b"caf\xe9"
