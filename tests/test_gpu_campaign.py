"""benchmarks/gpu_campaign.py end to end on the CPU (`--device cpu`, a smoke run): the data that travels holds no
PrivateTest image, a run leaves in $OUT only what a device call can bring back (at most 8 files, none over 16 MiB,
none in a folder), and what comes back unbundles into model packages that load and classify. The GPU itself is
not exercised here (CI never has one); the same script runs there with --device cuda."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from ferkit.packages import read_card
from tests.conftest import FER2013, FERPLUS, REPO, need

pytest.importorskip("torch", reason="needs the train extra")
SCRIPT = REPO / "benchmarks" / "gpu_campaign.py"


@pytest.fixture(scope="module")
def small_fer2013(tmp_path_factory):
    """A FER2013 tree of real images: 40 Training, 8 PublicTest and 2 PrivateTest per class."""
    source = need(FER2013)
    root = tmp_path_factory.mktemp("data") / "fer2013"
    for usage, folder, n in (("Training_", "train", 40), ("PublicTest_", "test", 8), ("PrivateTest_", "test", 2)):
        for label in sorted(p.name for p in (source / folder).iterdir()):
            dest = root / folder / label
            dest.mkdir(parents=True, exist_ok=True)
            for f in sorted((source / folder / label).glob(f"{usage}*.jpg"))[:n]:
                shutil.copy2(f, dest / f.name)
    return root


def campaign(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=900)


def test_pack_run_receive_on_the_cpu(small_fer2013, tmp_path):
    packed = campaign("pack", str(tmp_path / "gpu"), "--source", str(small_fer2013))
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(tmp_path / "gpu" / "fer2013.tar.xz") as tar:
        names = tar.getnames()
    assert any("/PublicTest_" in n for n in names) and any("/Training_" in n for n in names)
    assert not any("PrivateTest_" in n for n in names)  # the test set stays here

    out = tmp_path / "OUT"
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO / "src"))
    ran = campaign("run", str(REPO / "configs" / "member_seed2.yaml"), "--data", str(tmp_path / "gpu"), "--out",
                   str(out), "--device", "cpu", "--parallel", "1", "--epochs", "1", "--limit", "64",
                   "--val-limit", "32", env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["campaign.json", "member_seed2.safetensors", "member_seed2.zip"]
    assert all(p.is_file() and p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    (row,) = json.loads((out / "campaign.json").read_text())
    assert row["train_status"] == row["export_status"] == 0 and row["validation"]["n"] > 0
    recipe = (tmp_path / "ferkit-campaign" / "recipes" / "member_seed2.yaml").read_text()
    assert "PrivateTest" not in recipe and str(tmp_path) in recipe  # the device's own copy, no test split

    received = campaign("receive", str(out), "--into", str(tmp_path / "back"))
    assert received.returncode == 0, received.stderr
    package = tmp_path / "back" / "packages" / "member_seed2"
    assert {p.name for p in package.iterdir()} == {"card.json", "model.onnx", "weights.safetensors"}
    from safetensors.numpy import load_file

    floats = {v.dtype for v in load_file(package / "weights.safetensors").values() if v.dtype.kind == "f"}
    assert floats == {np.dtype("float16")}  # an int8 export stores them so: half the fp32 file, fits the way back
    assert read_card(package).training["torch_weights"] == {"source": "the run's best weights", "dtype": "float16"}
    from ferkit.classify import load_classifier

    face = np.full((48, 48), 128, np.uint8)
    scores = load_classifier(str(package)).predict([face])
    assert len(scores) == 1 and abs(sum(scores[0].values()) - 1) < 1e-3
    assert (tmp_path / "back" / "runs" / "member_seed2" / "card.json").exists()


def test_ferplus_packs_without_its_test_images_or_votes(tmp_path):
    """FER+ travels as its Training and PublicTest folders and a votes file without PrivateTest rows."""
    source = need(FERPLUS)
    small = tmp_path / "ferplus"
    for folder in ("FER2013Train", "FER2013Valid", "FER2013Test"):
        (small / folder).mkdir(parents=True)
        for f in sorted((source / folder).glob("*.png"))[:5]:
            shutil.copy2(f, small / folder / f.name)
    shutil.copy2(source / "fer2013new.csv", small / "fer2013new.csv")
    packed = campaign("pack", str(tmp_path / "gpu"), "--dataset", "ferplus", "--source", str(small))
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(tmp_path / "gpu" / "ferplus.tar.xz") as tar:
        names = tar.getnames()
        votes = tar.extractfile("ferplus/fer2013new.csv").read().decode().splitlines()
    assert sum("FER2013Train/" in n for n in names) == sum("FER2013Valid/" in n for n in names) == 5
    assert not any("FER2013Test" in n for n in names)
    usages = {line.split(",", 1)[0] for line in votes[1:]}
    assert usages == {"Training", "PublicTest"} and len(votes) == 1 + 28709 + 3589
