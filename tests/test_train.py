"""Training engine: a real (tiny) run on real FER2013 images, recipe validation, exact resume after kill -9."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ferkit.train.augment import AugmentConfig, augment_batch, mix_batch
from ferkit.train.config import ConfigError, config_from_dict, load_config
from ferkit.train.loop import fit
from tests.conftest import REPO


def tiny_recipe(train_path, val_path, train_split=None, val_split=None, epochs=3, **extra):
    raw = {
        "name": "tiny",
        "seed": 7,
        "data": {"train": [{"path": str(train_path), "split": train_split}],
                 "val": [{"path": str(val_path), "split": val_split}]},
        "model": {"arch": "fervgg", "args": {"widths": [8, 16, 16, 16], "hidden": 16}},
        "optim": {"name": "sgd", "lr": 0.05},
        "epochs": epochs,
        "batch_size": 64,
    }
    raw.update(extra)
    return raw


def test_recipe_typos_fail_at_load(tmp_path):
    raw = tiny_recipe("a", "b")
    raw["optim"]["lr_shedule"] = 3
    with pytest.raises(ConfigError, match="lr_shedule"):
        config_from_dict(raw)


def test_shipped_recipes_parse():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)


def test_tiny_run_writes_a_run_folder(tmp_path, small_fer_tree):
    cfg = config_from_dict(tiny_recipe(small_fer_tree, small_fer_tree, "PublicTest", "PrivateTest", epochs=2,
                                       augment={"mixup_alpha": 0.2, "cutmix_alpha": 1.0},
                                       loss={"label_smoothing": 0.1, "class_weights": "seed004"}))
    summary = fit(cfg, tmp_path / "run", progress=False)
    assert summary["epochs_done"] == 2
    for name in ("recipe.yaml", "best.safetensors", "last.safetensors", "metrics.csv", "train_state.pt"):
        assert (tmp_path / "run" / name).exists(), name
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,lr,train_loss")
    with pytest.raises(FileExistsError):
        fit(cfg, tmp_path / "run", progress=False)


def test_augmentation_is_a_function_of_the_generator():
    x = torch.rand(16, 1, 48, 48)
    cfg = AugmentConfig(mixup_alpha=0.4)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape
    y = torch.eye(7)[torch.randint(0, 7, (16,))]
    mx, my = mix_batch(x, y, cfg, torch.Generator().manual_seed(4))
    assert torch.allclose(my.sum(1), torch.ones(16))


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, fer2013):
    raw = tiny_recipe(fer2013, fer2013, "PublicTest", "PrivateTest", epochs=4)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    reference = tmp_path / "reference"
    fit(config_from_dict(raw), reference, progress=False)

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ferkit.cli", "train", str(recipe), "--out", str(run)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:  # header + 2 epochs done
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(metrics.read_text().splitlines()) - 1
    assert 2 <= done < 4

    subprocess.run(cmd + ["--resume"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = load_file(reference / "last.safetensors"), load_file(run / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (reference / "metrics.csv").read_text().splitlines()[-1].split(",")[:7] == \
        metrics.read_text().splitlines()[-1].split(",")[:7]
