"""A new user's first hour with the `ferkit` command, run as they run it (`python -m ferkit.cli` in a subprocess)
on real files: missing extras, empty folders, the evaluate default split, the models table, typos in options,
unwritable outputs, Ctrl-C. Each failure must be one line and a non-zero status, found before any work is done."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ferkit.cli import DETECTORS, main
from tests.conftest import PHOTOS, REPO, need

PHOTO = "dlib__2008_001322.jpg"  # three faces


def ferkit(*args: str, cwd: Path | None = None, prelude: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
    """`ferkit ARGS` in a fresh interpreter; ``prelude`` runs first (e.g. to make an optional package unimportable)."""
    code = f"import sys; {prelude}\nfrom ferkit.cli import main\nmain(prog_name='ferkit')"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess, status: int = 1) -> str:
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferkit: error: "), done.stderr
    return lines[0]


@pytest.fixture
def photo(tmp_path) -> Path:
    dst = tmp_path / "in" / "photo.jpg"
    dst.parent.mkdir()
    shutil.copy(need(PHOTOS / PHOTO), dst)
    return dst


# --- optional extras -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,blocked,extra", [
    (("train", "configs/default.yaml", "--out", "OUT"), "torch", "train"),
    (("export", "configs", "--out", "OUT"), "torch", "train"),
    (("serve", "--port", "0"), "fastapi", "serve"),
    (("explain", "README.md", "--out", "OUT"), "pytorch_grad_cam", "explain"),
    (("explain", "--classes", "--out", "OUT"), "torch", "explain"),
])
def test_missing_extra_is_one_line_naming_the_install(args, blocked, extra, tmp_path):
    """What an install without the extra looks like to `import torch`: sys.modules[name] = None."""
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    line = one_line_error(ferkit(*args, cwd=REPO, prelude=f"sys.modules[{blocked!r}] = None"))
    assert f"ferkit {args[0]} needs the '{extra}' extra: pip install \"ferkit[{extra}]\"" in line
    assert not (tmp_path / "OUT").exists()


def test_mediapipe_missing_is_one_line_naming_the_readme_install(photo):
    line = one_line_error(ferkit("analyze", str(photo), "--detector", "mediapipe",
                                 prelude="sys.modules['mediapipe'] = None"))
    assert 'pip install "ferkit[mediapipe]"' in line
    assert 'pip install "ferkit[mediapipe]"' in (REPO / "README.md").read_text()


def test_dlib_missing_is_one_line_naming_the_faces_extra(photo):
    line = one_line_error(ferkit("analyze", str(photo), "--detector", "dlib", prelude="sys.modules['dlib'] = None"))
    assert 'pip install "ferkit[faces]"' in line


# --- empty inputs, missing paths, outputs checked before the work ----------------------------------------------

@pytest.mark.parametrize("command", ["analyze", "rank", "bench", "evaluate"])
@pytest.mark.parametrize("content", ["empty", "no images"])
def test_folder_without_images_is_an_error(command, content, tmp_path):
    folder = tmp_path / "photos"
    (folder / "happy").mkdir(parents=True)
    if content == "no images":
        (folder / "notes.txt").write_text("not a photo\n")
        (folder / "happy" / "readme.md").write_text("# nothing\n")
    line = one_line_error(ferkit(command, str(folder)))
    assert str(folder) in line and "no images" in line


def test_missing_input_path_is_one_line(tmp_path, photo):
    line = one_line_error(ferkit("analyze", str(photo), str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")))
    assert "no such file or folder" in line and "nope.jpg" in line
    assert not (tmp_path / "o").exists()  # checked before anything was written
    line = one_line_error(ferkit("evaluate", str(tmp_path / "no-such-data")))
    assert "no-such-data: no such file or folder" in line


def test_unwritable_outputs_fail_before_the_work(tmp_path, photo):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = tmp_path / "out"
    line = one_line_error(ferkit("analyze", str(photo), "--out", str(out), "--json", str(blocker / "r.json")))
    assert line.startswith(f"ferkit: error: --json {blocker / 'r.json'}: cannot create its folder {blocker}")
    assert not out.exists(), "the work started although its --json could never be written"
    line = one_line_error(ferkit("analyze", str(photo), "--out", str(blocker / "sub")))
    assert line.startswith(f"ferkit: error: --out {blocker / 'sub'}")
    done = ferkit("bench", str(photo), "--json", str(tmp_path))  # a folder where a file belongs: a usage error
    assert done.returncode == 2 and "is a directory" in done.stderr


def test_json_and_csv_into_new_folders_are_created(tmp_path, photo):
    done = ferkit("analyze", str(photo), "--json", str(tmp_path / "new" / "r.json"),
                  "--csv", str(tmp_path / "other" / "deep" / "f.csv"))
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "new" / "r.json").read_text())[0]["faces"]) == 3
    assert (tmp_path / "other" / "deep" / "f.csv").is_file()


# --- evaluate: the test split by default, and it says what it scored ----------------------------------------

def test_evaluate_defaults_to_the_test_split_and_names_it(small_fer_tree, tmp_path):
    done = ferkit("evaluate", str(small_fer_tree), "--json", str(tmp_path / "r.json"))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first == f"scored: split PrivateTest of {small_fer_tree} (n=42)", first  # 6 PrivateTest per class
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["split"] == "PrivateTest" and report["n"] == 42
    everything = ferkit("evaluate", str(small_fer_tree), "--split", "all")
    assert everything.stdout.splitlines()[0].endswith("(n=84)") and "all entries" in everything.stdout
    val = ferkit("evaluate", str(small_fer_tree), "--split", "val")
    assert val.stdout.splitlines()[0].startswith("scored: split PublicTest")


def test_evaluate_without_split_information_scores_all_and_says_so(small_fer_tree):
    for f in small_fer_tree.rglob("*.jpg"):  # file names no longer carry FER2013's usage
        f.rename(f.with_name(f.name.split("_", 1)[1]))
    done = ferkit("evaluate", str(small_fer_tree))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"scored: all entries of {small_fer_tree} (n=84)"


def test_evaluate_help_shows_the_default_split_and_bad_splits_are_usage_errors(small_fer_tree):
    help_text = " ".join(ferkit("evaluate", "--help").stdout.split())
    assert "[default: (PrivateTest where DATA has it, else all)]" in help_text
    done = ferkit("evaluate", str(small_fer_tree), "--split", "holdout")
    assert done.returncode == 2 and "unknown split 'holdout'" in done.stderr


# --- ferkit models -------------------------------------------------------------------------------------------

def test_models_is_a_readable_table_from_the_cards():
    from ferkit.packages import GRAPH_NAME, WEIGHTS_DIR, read_card, shipped_models

    done = ferkit("models")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["name", "labels", "size", "accuracy", "ECE", "crop", "detector"]
    assert "{" not in done.stdout and "'" not in done.stdout  # no Python reprs
    for name in shipped_models():
        card = read_card(WEIGHTS_DIR / name)
        row = next(line for line in lines[1:] if line.split()[0] == name)
        m = card.metrics
        assert row.split()[1:4] == [str(len(card.labels)),
                                    f"{(WEIGHTS_DIR / name / GRAPH_NAME).stat().st_size / 1e6:.1f}", "MB"]
        assert f"{100 * m['accuracy']:.2f}% {m['split']} (n={m['n']}), no TTA" in row
        assert f"{100 * m['flip_tta_accuracy']:.2f}% flip TTA" in row
        assert f"{name}: {', '.join(card.labels)};" in done.stdout


# --- small things --------------------------------------------------------------------------------------------

def test_counts_are_plural_aware_and_face_numbers_match_the_csv(photo, tmp_path):
    done = ferkit("analyze", str(photo), "--csv", str(tmp_path / "f.csv"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("1 image, 3 faces, 0 failed"), done.stderr
    printed = {}
    for line in done.stdout.splitlines():
        head, box = line.split(" at ")
        printed[int(head.rsplit(" ", 1)[1])] = box.split(":")[0]
    with open(tmp_path / "f.csv") as f:
        rows = {int(r["face"]): f"x={r['x']} y={r['y']} w={r['w']} h={r['h']}" for r in csv.DictReader(f)}
    assert printed == rows and sorted(rows) == [0, 1, 2]


def test_max_faces_must_be_positive_and_keeps_the_largest(photo):
    done = ferkit("analyze", str(photo), "--max-faces", "-1")
    assert done.returncode == 2 and "--max-faces" in done.stderr
    done = ferkit("analyze", str(photo), "--max-faces", "1")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 1


@pytest.mark.parametrize("command", ["analyze", "rank", "bench", "evaluate"])
def test_shared_options_are_choices_and_given_once(command, photo):
    runner = CliRunner()
    result = runner.invoke(main, [command, str(photo), "--model", "default", "--model", "other"])
    assert result.exit_code == 2 and "given 2 times (--model default, --model other); give it once" in result.output
    result = runner.invoke(main, [command, str(photo), "--detector", "dlib2"])
    assert result.exit_code == 2 and "'dlib2' is not one of" in result.output
    help_text = runner.invoke(main, [command, "--help"]).output
    assert "--model NAME|FOLDER" in help_text and "[auto|mtcnn|dlib|haar|mediapipe|mediapipe_short]" in help_text


def test_device_is_a_choice(tmp_path):
    result = CliRunner().invoke(main, ["train", str(REPO / "configs" / "default.yaml"), "--device", "gpu0"])
    assert result.exit_code == 2 and "'gpu0' is not one of 'cpu', 'cuda'" in result.output


def test_detector_choices_are_the_registered_detectors():
    from ferkit.faces import detector_names

    assert set(DETECTORS) == set(detector_names())


def test_help_summaries_are_not_cut():
    done = ferkit("--help")
    listed = done.stdout.split("Commands:")[1].strip().splitlines()
    assert len(listed) == len(main.commands) and not any("..." in line for line in listed), done.stdout


def _sigint_as_in_a_terminal() -> None:
    """A test run started in the background by a shell inherits SIGINT ignored, and Python then never installs its
    Ctrl-C handler in the child: give the child the default disposition a terminal user has."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    photos = sorted(need(PHOTOS).glob("*.jpg"))
    for copy in range(4):
        for p in photos:
            shutil.copy(p, folder / f"{copy}_{p.name}")
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ferkit.cli", "analyze", str(folder), "--out",
                                 str(tmp_path / "out"), "--workers", "1"], stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env, preexec_fn=_sigint_as_in_a_terminal)
        journal, deadline = tmp_path / "out" / "results.jsonl", time.monotonic() + 120
        while (not journal.exists() or journal.read_text().count("\n") < 2) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)  # wait until the work has started: the header and a first image's record are journalled
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=120)
    text = err.read_text()
    assert status == 130, text
    assert text.rstrip().endswith("ferkit: interrupted") and "Traceback" not in text
    done = journal.read_text().splitlines()
    assert 0 < len(done) < len(photos) * 4  # stopped part-way; a rerun resumes from the journal


# --- house rules: ferkit's own errors only, logging -----------------------------------------------------------

def test_only_ferkit_errors_become_one_line():
    """A KeyError is a bug, not a user error: it must keep its traceback (here: CliRunner sees the exception)."""
    from ferkit.cli import FerkitGroup
    from ferkit.errors import UserInputError

    @click.group(cls=FerkitGroup)
    def group() -> None:
        pass

    @group.command()
    @click.argument("kind")
    def fail(kind: str) -> None:
        raise UserInputError("bad input: do this") if kind == "user" else KeyError(kind)

    user = CliRunner().invoke(group, ["fail", "user"])
    assert user.exit_code == 1 and user.output.strip() == "ferkit: error: bad input: do this"
    bug = CliRunner().invoke(group, ["fail", "bug"])
    assert isinstance(bug.exception, KeyError)


def test_skipped_files_are_logged_and_the_others_kept(tmp_path, photo):
    (photo.parent / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    done = ferkit("analyze", str(photo.parent), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert any(line.startswith("skipped ") and "broken.jpg" in line for line in done.stderr.splitlines())
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [Path(r["source"]).name for r in results] == ["photo.jpg"] and len(results[0]["faces"]) == 3
