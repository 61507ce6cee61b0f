"""Shared fixtures: where the real data lives, a tiny real ONNX package, small real-image folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FERKIT_SHARED", REPO.parent / "shared")).resolve()
DATA = SHARED / "data"
FER2013 = DATA / "fer2013"
FERPLUS = DATA / "ferplus"
PHOTOS = DATA / "photos"


def need(path: Path) -> Path:
    """Skip the test (with the reason) when the shared data it reads is absent."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder, ../shared next to the repo, or set FERKIT_SHARED)")
    return path


@pytest.fixture
def fer2013() -> Path:
    return need(FER2013)


@pytest.fixture
def ferplus() -> Path:
    return need(FERPLUS)


@pytest.fixture
def small_fer_tree(tmp_path: Path) -> Path:
    """A class-per-folder tree of real FER2013 test images: 12 per class, PublicTest and PrivateTest mixed."""
    src = need(FER2013) / "test"
    root = tmp_path / "small"
    for class_dir in sorted(src.iterdir()):
        if not class_dir.is_dir():
            continue
        files = sorted(class_dir.glob("PublicTest_*.jpg"))[:6] + sorted(class_dir.glob("PrivateTest_*.jpg"))[:6]
        dst = root / class_dir.name
        dst.mkdir(parents=True)
        for f in files:
            shutil.copy(f, dst / f.name)
    return root


def make_linear_onnx(folder: Path, labels: list[str], size: int = 8, channels: int = 1,
                     seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """A real ONNX graph (flatten -> Gemm) with known weights, plus its card; returns (folder, W, b)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ferkit.packages import ModelCard, write_card

    rng = np.random.default_rng(seed)
    d = channels * size * size
    w = rng.normal(size=(d, len(labels))).astype(np.float32)
    b = rng.normal(size=(len(labels),)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], axis=1), helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(labels)])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    write_card(folder, ModelCard(name=folder.name, labels=labels, input_size=size, channels=channels,
                                 architecture="linear-test"))
    return folder, w, b
