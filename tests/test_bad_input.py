"""Bad input that used to crash ferkit or give silently wrong results, each built from real files.

FER2013 csv rows, model packages and training recipes: every broken one is one clear line (or, for dataset rows,
one reported problem naming the csv line) while everything that is fine is still read.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ferkit.data import decode, open_dataset
from ferkit.data.stats import dataset_stats
from tests.conftest import PHOTOS, need

FER2013_ORDER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def real_fer_rows(tree: Path, n: int = 8) -> list[list[str]]:
    """[emotion, pixels, Usage] rows made from the first ``n`` real FER2013 images of a class-per-folder tree."""
    rows = []
    for s in list(decode(open_dataset(tree).entries))[:n]:
        rows.append([str(FER2013_ORDER.index(s.label)), " ".join(map(str, s.image.ravel())), s.split])
    return rows


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        w.writerows(rows)
    return path


def test_fer2013_csv_bad_rows_are_problems_with_their_line_and_the_rest_is_read(tmp_path, small_fer_tree):
    good = real_fer_rows(small_fer_tree)
    label, pixels, usage = good[0]
    values = pixels.split()
    bad = {
        "pixel value 300 is outside 0-255": [label, " ".join(["300"] + values[1:]), usage],
        "pixel value -5 is outside 0-255": [label, " ".join(values[:-1] + ["-5"]), usage],
        "fewer cells than the header": [label],
        "emotion -1 is outside 0-6": ["-1", pixels, usage],
        "holds 4 values, not 2304": [label, " ".join(values[:4]), usage],
        "holds 2303 values": [label, " ".join(values[:-1]), usage],
        "emotion 'happy' is not a whole number": ["happy", pixels, usage],
        "not a whole number": [label, " ".join(["12.5"] + values[1:]), usage],
    }
    rows = good[:4] + list(bad.values()) + good[4:]
    path = write_csv(tmp_path / "fer2013.csv", rows)

    ds = open_dataset(path)
    got = list(decode(ds.entries))
    expected = [r for r in rows if r in good]
    assert len(got) == len(good) == len(expected)
    for s, (code, pix, split) in zip(got, expected):
        assert s.label == FER2013_ORDER[int(code)] and s.split == split
        assert np.array_equal(s.image, np.array(pix.split(), dtype=np.uint8).reshape(48, 48))
    problems = ds.problems()
    assert len(problems) == len(bad)
    for i, (problem, why) in enumerate(zip(problems, bad)):
        line = 2 + 4 + i  # header, four good rows, then the bad ones in order
        assert problem.source == f"{path}:{line}" and problem.reason.startswith(f"{path}:{line}: ")
        assert why in problem.reason, (why, problem.reason)
        assert "\n" not in problem.reason

    # the split filter keeps a bad row's problem with its split; the consumers report them
    split = good[0][2]
    assert {p.source for p in ds.problems(split)} >= {f"{path}:{6 + i}" for i in range(2)}
    stats = dataset_stats(path)
    assert len(stats.problems) == len(bad) and sum(sum(c.values()) for c in stats.counts.values()) == len(good)


def test_fer2013_csv_bad_rows_reach_training_and_evaluation_reports(tmp_path, small_fer_tree):
    from ferkit.evaluate import evaluate_dataset
    from ferkit.labels import space
    from ferkit.train.tensors import load_tensors

    good = real_fer_rows(small_fer_tree, 12)
    label, pixels, usage = good[0]
    path = write_csv(tmp_path / "fer2013.csv", good + [["-1", pixels, usage], [label, "1 2 3 4", usage]])
    data = load_tensors([(str(path), None)], space("fer2013"), 48, 1)
    assert len(data) == len(good) and len(data.problems) == 2
    assert {p.source for p in data.problems} == {f"{path}:{len(good) + 2}", f"{path}:{len(good) + 3}"}
    report = evaluate_dataset(path, split="all")
    assert report["n"] == len(good) and report["skipped"]["unreadable"] == 2 and len(report["problems"]) == 2
    test_only = evaluate_dataset(path)  # the default: the test split, with the broken rows of that split
    assert test_only["split"] == "PrivateTest" and test_only["n"] < len(good)
    assert len(test_only["problems"]) == (usage == "PrivateTest") * 2


# ---- model packages: checked when the package loads, one line each ----

def broken_package(tmp_path: Path, name: str, graph=None, card=None) -> Path:
    """A copy of the shipped default package with its graph bytes and/or card JSON replaced by a function of them."""
    import json
    import shutil

    from ferkit.packages import WEIGHTS_DIR

    folder = tmp_path / name
    shutil.copytree(WEIGHTS_DIR / "default", folder)
    if graph is not None:
        (folder / "model.onnx").write_bytes(graph((folder / "model.onnx").read_bytes()))
    if card is not None:
        (folder / "card.json").write_text(json.dumps(card(json.loads((folder / "card.json").read_text()))))
    return folder


def _set(**changes):
    return lambda card: {**card, **changes}


def _drop(key):
    return lambda card: {k: v for k, v in card.items() if k != key}


BROKEN_PACKAGES = {
    "empty graph": ({"graph": lambda b: b""}, "graph file is empty"),
    "truncated graph": ({"graph": lambda b: b[:len(b) // 2]}, "not a readable ONNX graph, truncated or corrupt"),
    "corrupt graph": ({"graph": lambda b: b[:16] + bytes(4096) + b[16 + 4096:]},
                      "not a readable ONNX graph, truncated or corrupt"),
    "card input size": ({"card": _set(input_size=64)}, r"card says 1 channel\(s\) of 64x64, but the graph's input"),
    "card channels": ({"card": _set(channels=3)}, r"card says 3 channel\(s\) of 48x48, but the graph's input"),
    "card std 0": ({"card": _set(std=0)}, "std must be > 0"),
    "card std text": ({"card": _set(std="0.5")}, "std must be a number"),
    "card is a list": ({"card": lambda card: [card]}, "a model card is a JSON object"),
    "card is a number": ({"card": lambda card: 7}, "a model card is a JSON object"),
    "card without labels": ({"card": _drop("labels")}, "model card has no labels"),
    "labels count": ({"card": lambda card: {**card, "labels": card["labels"][:6]}},
                     "graph has 7 outputs but the card lists 6 labels"),
    "labels not a list": ({"card": _set(labels="happy")}, "labels must be a non-empty list"),
    "card not json": ({"card": None, "raw_card": "{\"name\": \"default\", "}, "unreadable model card"),
}


@pytest.mark.parametrize("case", list(BROKEN_PACKAGES))
def test_broken_model_package_is_one_clear_line_at_load(tmp_path, case):
    from ferkit.packages import PackageError
    from ferkit.runtime import ModelRuntime

    spec, message = BROKEN_PACKAGES[case]
    folder = broken_package(tmp_path, "pkg", spec.get("graph"), spec.get("card"))
    if "raw_card" in spec:
        (folder / "card.json").write_text(spec["raw_card"])
    with pytest.raises(PackageError, match=message) as info:
        ModelRuntime(folder)
    assert "\n" not in str(info.value)


def test_the_intact_copy_loads_and_a_broken_package_fails_in_the_cli_with_one_line(tmp_path):
    import subprocess
    import sys

    from ferkit.runtime import ModelRuntime

    intact = broken_package(tmp_path, "intact")
    assert ModelRuntime(intact).labels  # the copy itself is fine: the cases above fail for their one change
    folder = broken_package(tmp_path, "pkg", card=_set(std=0))
    photo = sorted(need(PHOTOS).glob("*.jpg"))
    proc = subprocess.run([sys.executable, "-m", "ferkit.cli", "analyze", str(photo[0]), "--model", str(folder),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 1 and "std must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- training recipes: every field type- and range-checked, one line naming it ----

def shipped_recipe_with(tmp_path: Path, edit) -> Path:
    """configs/default.yaml (the shipped model's recipe, as text) with one line edited by ``edit``."""
    from tests.conftest import REPO

    text = (REPO / "configs" / "default.yaml").read_text()
    path = tmp_path / "recipe.yaml"
    path.write_text(edit(text))
    return path


def _replace(old: str, new: str):
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


BAD_RECIPES = {
    'lr "fast"': (_replace("lr: 0.05", "lr: fast"), r"optim\.lr: input should be a valid number \(got 'fast'\)"),
    'batch_size "32"': (_replace("batch_size: 128", 'batch_size: "32"'),
                        r"batch_size: input should be a valid integer \(got '32'\); numbers go without quotes"),
    "batch_size 0": (_replace("batch_size: 128", "batch_size: 0"), r"batch_size: input should be greater than"),
    "unknown architecture argument": (_replace("hidden: 256", "hiden: 256"),
                                      r"architecture 'fervgg' takes no argument 'hiden'; its arguments: "),
    'hflip "yes"': (_replace("hflip: 0.5", 'hflip: "yes"'), r"augment\.hflip: input should be a valid number"),
    "hflip yes (YAML's true)": (_replace("hflip: 0.5", "hflip: yes"), r"augment\.hflip: .*\(got True\)"),
    "hflip 2": (_replace("hflip: 0.5", "hflip: 2"), r"augment\.hflip: input should be less than or equal to 1"),
    "lr 1e-3 (YAML text)": (_replace("lr: 0.05", "lr: 1e-3"), r"optim\.lr: .*YAML needs a dot in 1\.0e-3"),
    "epochs -1": (_replace("epochs: 50", "epochs: -1"), r"epochs: input should be greater than or equal to 1"),
    "unknown optimiser": (_replace("name: sgd", "name: adagrad"), r"optim\.name: input should be 'sgd'"),
    "unknown key": (_replace("lr: 0.05", "lr: 0.05, lr_shedule: 3"),
                    r"optim\.lr_shedule: unknown key; allowed: name, lr, momentum"),
    "precision": (_replace("precision: bf16", "precision: fp16"), r"precision: input should be 'bf16' or 'fp32'"),
    "not a mapping": (lambda text: "- just\n- a list\n", r"a recipe is a mapping"),
    "not YAML": (lambda text: text + "\n  bad: [indent\n", r"cannot read recipe"),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_recipe_value_is_one_line_naming_the_field(tmp_path, case):
    from ferkit.train.config import ConfigError, load_config

    edit, message = BAD_RECIPES[case]
    path = shipped_recipe_with(tmp_path, edit)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_the_shipped_recipe_itself_loads_and_a_bad_one_fails_in_the_cli_with_one_line(tmp_path):
    import subprocess
    import sys

    from ferkit.train.config import load_config

    assert load_config(shipped_recipe_with(tmp_path, lambda text: text)).batch_size == 128
    path = shipped_recipe_with(tmp_path, _replace("lr: 0.05", "lr: fast"))
    proc = subprocess.run([sys.executable, "-m", "ferkit.cli", "train", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "optim.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


# ---- `ferkit export` of a broken run folder ----

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A real one-epoch run on real FER2013 images (the module's broken runs are copies of it)."""
    from ferkit.train.config import config_from_dict
    from ferkit.train.loop import fit
    from tests.conftest import FER2013
    from tests.test_train import tiny_recipe

    need(FER2013)
    raw = tiny_recipe(FER2013, FER2013, "PublicTest", "PrivateTest", epochs=1)
    raw["data"].update(limit=128, val_limit=64, size=32)
    raw["model"]["args"] = {"widths": [8, 16, 16], "hidden": 16}
    run = tmp_path_factory.mktemp("trained") / "run"
    fit(config_from_dict(raw), run, progress=False)
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_header(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"{not json" + data[17:])


def _other_architecture(path: Path) -> None:
    from safetensors.torch import save_file

    from ferkit.models import build_model

    model = build_model("small_cnn", num_classes=7, in_chans=1, input_size=32)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _recipe_edit(edit):
    return lambda path: path.write_text(edit(path.read_text()))


BROKEN_RUNS = {
    "truncated weights": ("best.safetensors", _truncate, "unreadable weights, truncated or corrupt"),
    "garbled weights": ("best.safetensors", _garble_header, "unreadable weights, truncated or corrupt"),
    "empty weights": ("best.safetensors", lambda p: p.write_bytes(b""), "unreadable weights"),
    "weights of another model": ("best.safetensors", _other_architecture, "these weights do not fit the recipe's model"),
    "missing weights": ("best.safetensors", Path.unlink, "no such weights file"),
    "recipe not YAML": ("recipe.yaml", _recipe_edit(lambda t: "name: [unclosed\n" + t), "cannot read recipe"),
    "recipe lr fast": ("recipe.yaml", _recipe_edit(lambda t: t.replace("lr: 0.05", "lr: fast", 1)), r"optim\.lr"),
    "recipe empty": ("recipe.yaml", lambda p: p.write_text(""), "a recipe is a mapping"),
    "recipe missing": ("recipe.yaml", Path.unlink, "not a training run"),
    "metrics missing": ("metrics.csv", Path.unlink, "metrics.csv: missing"),
}


@pytest.mark.parametrize("case", list(BROKEN_RUNS))
def test_export_of_a_broken_run_is_one_line(tmp_path, trained_run, case):
    import shutil

    from ferkit.errors import FerkitError
    from ferkit.train.export_run import export_run

    name, breaker, message = BROKEN_RUNS[case]
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    breaker(run / name)
    with pytest.raises(FerkitError, match=message) as info:
        export_run(run, tmp_path / "pkg", evaluate=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "pkg").exists()


def test_export_cli_of_a_run_with_corrupt_weights_prints_one_line(tmp_path, trained_run):
    import shutil
    import subprocess
    import sys

    from ferkit.train.export_run import export_run

    export_run(trained_run, tmp_path / "intact", evaluate=False)  # the run itself exports
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _truncate(run / "best.safetensors")
    proc = subprocess.run([sys.executable, "-m", "ferkit.cli", "export", str(run), "--out", str(tmp_path / "pkg"),
                           "--no-evaluate"], capture_output=True, text=True)
    assert proc.returncode == 1 and "unreadable weights" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pkg").exists()  # no empty package folder left behind
