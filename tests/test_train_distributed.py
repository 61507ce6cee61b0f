"""Data-parallel training on real FER2013 images: torchrun (2 gloo processes), resume on another worker count, Ray.

Why the curves can be compared tightly: every worker draws the epoch's order and augments (and mixes) each whole
global batch with the single process's generator, keeps every 2nd sample and scales its loss by its share of the
batch's sample weights (:mod:`ferkit.train.distributed`). With a model that has no BatchNorm and no dropout
(seed 003's small CNN, dropout 0) and fp32, two workers compute the single process's gradient of each step, only
summed in another order (each worker's half, then gloo's all-reduce, instead of one batched backward). Measured
when this test was written: at most 1.8e-7 relative difference per step over the first epoch, where a worker set
that trains both workers on the same half of each batch differs by 3.4e-2 at the very first step (and by up to
3.9e-1 later). The tolerance, 1e-4 relative on each step's loss, sits between the two by two orders of magnitude
on each side, so float summation order passes and any sharding, loss-scaling or gradient-sync error fails.

BatchNorm is left per worker (torch's SyncBatchNorm runs on GPUs only): with it the runs differ by batch-statistics
noise, which is what DDP training normally is, so the model here leaves it out to compare exactly.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ferkit.train.config import config_from_dict
from ferkit.train.loop import fit
from tests.conftest import FER2013, REPO, need

RTOL = 1e-4


@pytest.fixture(scope="module")
def fer(tmp_path_factory) -> Path:
    """A FER2013 tree of real images, 60 training images and 16 PublicTest images per class: the whole dataset's
    folder listing (35,000 files, in every worker process) would cost more than the training here."""
    src = need(FER2013)
    root = tmp_path_factory.mktemp("fer2013")
    for split, pattern, n in (("train", "*.jpg", 60), ("test", "PublicTest_*.jpg", 16)):
        for class_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            dst = root / split / class_dir.name
            dst.mkdir(parents=True)
            for f in sorted(class_dir.glob(pattern))[:n]:
                shutil.copy(f, dst / f.name)
    return root


def recipe(fer: Path, epochs: int = 2) -> dict:
    return {
        "name": "ddp", "seed": 3, "precision": "fp32", "epochs": epochs, "batch_size": 48,
        "data": {"train": [{"path": str(fer), "split": "train"}], "val": [{"path": str(fer), "split": "PublicTest"}],
                 "limit": 336, "val_limit": 96},
        "model": {"arch": "small_cnn", "args": {"widths": [8, 16], "kernels": [5, 7], "hidden": 32, "dropout": 0.0}},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "loss": {"label_smoothing": 0.1, "class_weights": "seed004"},
        "augment": {"mixup_alpha": 0.2},
    }


def step_losses(run: Path) -> list[tuple[int, int, float]]:
    with open(run / "steps.csv", newline="") as f:
        return [(int(r["epoch"]), int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def assert_same_curve(got: list, want: list) -> None:
    assert [(e, s) for e, s, _ in got] == [(e, s) for e, s, _ in want]
    worst = max(abs(g - w) / abs(w) for (_, _, g), (_, _, w) in zip(got, want))
    assert worst < RTOL, f"largest relative step-loss difference {worst:.2e}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fer) -> Path:
    """The single-process run every distributed run is compared with (2 epochs, 7 steps each)."""
    run = tmp_path_factory.mktemp("single") / "run"
    fit(config_from_dict(recipe(fer)), run, progress=False)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_workers_follow_the_single_process_curve(reference, fer, tmp_path):
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe(fer)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
         "-m", "ferkit.cli", "train", str(path), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run ") == 1, proc.stdout  # rank 0 alone reports
    run = tmp_path / "run"
    assert_same_curve(step_losses(run), step_losses(reference))
    # validation is sharded over the workers and gathered: the same scores as one process
    state = torch.load(run / "train_state.pt", weights_only=True)
    want = torch.load(reference / "train_state.pt", weights_only=True)
    assert state["workers"] == 2 and state["global_batch"] == 48 and want["workers"] == 1
    for got_row, want_row in zip(state["history"], want["history"]):
        assert got_row["val_accuracy"] == pytest.approx(want_row["val_accuracy"], abs=1e-9)
        assert got_row["train_loss"] == pytest.approx(want_row["train_loss"], rel=RTOL)
    hardware = json.loads((run / "card.json").read_text())["training"]["hardware"]
    assert hardware["workers"] == 2 and hardware["summary"].endswith("fp32, 2 workers")


def _spawned_worker(rank: int, world: int, port: int, raw: dict, run: str) -> None:
    import torch.distributed as dist

    from ferkit.train.distributed import Workers

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        fit(config_from_dict(raw), run, progress=False, stop_after_epochs=1, workers=Workers(rank, world))
    finally:
        dist.destroy_process_group()


def test_a_two_worker_checkpoint_resumes_on_one_worker(reference, fer, tmp_path):
    run = tmp_path / "run"
    torch.multiprocessing.spawn(_spawned_worker, args=(2, free_port(), recipe(fer), str(run)), nprocs=2)
    assert not (run / "card.json").exists()  # stopped after epoch 1 of 2
    assert torch.load(run / "train_state.pt", weights_only=True)["workers"] == 2
    summary = fit(config_from_dict(recipe(fer)), run, resume=True, progress=False)
    assert summary["epochs_done"] == 2
    # the resumed epoch is the uninterrupted single-process run's epoch 2: the order, the schedule and the
    # optimiser's momentum carried over, only the sharding changed
    assert_same_curve(step_losses(run), step_losses(reference))
    records = json.loads((run / "hardware.json").read_text())
    assert [(r["workers"], r["from_epoch"]) for r in records] == [(2, 0), (1, 1)]


def test_ray_engine_trains_with_two_workers(reference, fer, tmp_path):
    pytest.importorskip("ray", reason="the ray extra (pip install -e '.[ray]') runs --engine ray")
    from click.testing import CliRunner

    from ferkit.cli import main
    from ferkit.scale.cluster import ray_session
    from ferkit.train.run import load_run_model

    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe(fer)))
    with ray_session(None, "test", num_cpus=2):
        result = CliRunner().invoke(main, ["train", str(path), "--engine", "ray", "--workers", "2",
                                           "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "run " in result.output and "2 epochs" in result.output
    run = tmp_path / "run"
    assert_same_curve(step_losses(run), step_losses(reference))
    model, _ = load_run_model(run)  # the checkpoint is the unwrapped model's: it loads where the recipe builds it
    assert sum(p.numel() for p in model.parameters()) == json.loads((run / "card.json").read_text())["parameters"]
    assert json.loads((run / "hardware.json").read_text())[0]["workers"] == 2


def test_worker_options_need_the_ray_engine(fer, tmp_path):
    from click.testing import CliRunner

    from ferkit.cli import main

    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe(fer)))
    result = CliRunner().invoke(main, ["train", str(path), "--workers", "2", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--workers needs --engine ray" in result.output


def test_ray_engine_refuses_a_run_folder_before_starting_ray(reference, fer):
    from click.testing import CliRunner

    from ferkit.cli import main

    result = CliRunner().invoke(main, ["train", str(reference / "recipe.yaml"), "--engine", "ray", "--out",
                                       str(reference)])
    assert result.exit_code == 1 and "already holds a run; pass --resume" in result.output
