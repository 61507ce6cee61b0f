"""Training engine: a real (tiny) run on real FER2013 images, recipe validation, exact resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from PIL import Image
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
    cfg.data.test = cfg.data.val[:1]
    summary = fit(cfg, tmp_path / "run", progress=False)
    assert summary["epochs_done"] == 2
    run = tmp_path / "run"
    for name in ("recipe.yaml", "best.safetensors", "last.safetensors", "metrics.csv", "train_state.pt",
                 "curves.png", "card.json", "validation/confusion.png", "validation/confusion_normalized.png",
                 "test/confusion.png"):
        assert (run / name).exists(), name
    assert Image.open(run / "curves.png").size[0] > 500
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,lr,train_loss")
    # the card scores the best weights: the same validation accuracy as the best epoch's row
    card = json.loads((run / "card.json").read_text())
    best_row = max(rows[1:], key=lambda r: float(r.split(",")[5]))
    assert card["metrics"]["validation"]["accuracy"] == pytest.approx(float(best_row.split(",")[5]), abs=1e-4)
    assert card["metrics"]["test"]["n"] == card["metrics"]["validation"]["n"] > 0
    assert card["training"]["epochs"] == 2 and card["labels"] == list(summary["labels"])
    # where it trained, measured, not fixed text: this machine's CPU model and cores, the recipe's precision
    hardware = card["training"]["hardware"]
    assert hardware["device"] == "cpu" and "gpu" not in hardware and hardware["precision"] == cfg.precision
    assert hardware["cpu_cores"] == len(os.sched_getaffinity(0))
    cpuinfo = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    assert hardware["cpu"] and (not cpuinfo or hardware["cpu"] in cpuinfo)
    assert hardware["summary"].startswith(hardware["cpu"]) and hardware["summary"].endswith(cfg.precision)
    assert card["architecture"] == {"arch": "fervgg", "args": {"widths": [8, 16, 16, 16], "hidden": 16}}
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


def _same_weights(a_dir, b_dir, name="last.safetensors"):
    a, b = load_file(a_dir / name), load_file(b_dir / name)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def kill_and_resume(tmp_path, raw, kill_after=2, epochs=None):
    """Train ``raw`` uninterrupted in-process and through `ferkit train` killed (SIGKILL) once ``kill_after``
    epochs are on disk, then resumed with --resume; both must end with identical weights and metrics.
    Returns the number of epochs the killed run had finished."""
    epochs = epochs or config_from_dict(raw).total_epochs
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
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after + 1:  # header + epochs done
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = len(metrics.read_text().splitlines()) - 1
    assert kill_after <= done < epochs

    subprocess.run(cmd + ["--resume"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _same_weights(reference, run)
    assert (reference / "metrics.csv").read_text().splitlines()[-1].split(",")[:7] == \
        metrics.read_text().splitlines()[-1].split(",")[:7]
    return done


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, fer2013):
    kill_and_resume(tmp_path, tiny_recipe(fer2013, fer2013, "PublicTest", "PrivateTest", epochs=4))


# ---- two-phase transfer learning (seeds 000, 003, 004) ----

def phased_recipe(train_path, val_path, phases, arch="fervgg", train_split=None, val_split=None, **extra):
    raw = tiny_recipe(train_path, val_path, train_split, val_split, **extra)
    del raw["epochs"]
    raw["phases"] = phases
    if arch != "fervgg":
        raw["model"] = {"arch": arch, "args": ARCH_ARGS.get(arch, {})}
        raw["data"]["size"] = 32
    return raw


ARCH_ARGS = {"mobilenetv2": {"head": "seed000", "head_widths": [32, 16]}, "small_cnn": {"hidden": 32}}


def test_phase_schema_is_typed_and_strict():
    base = tiny_recipe("a", "b")
    del base["epochs"]
    ok = config_from_dict({**base, "phases": [{"epochs": 2, "train": "head", "lr": 1e-3},
                                              {"epochs": 3, "train": "last_n", "last_n": 2, "lr": 1e-4}]})
    assert ok.total_epochs == 5 and ok.epochs is None
    ok.set_epochs(1)
    assert [p.epochs for p in ok.phases] == [1, 1]
    bad = [
        ({"phases": [{"epochs": 2, "train": "head", "lr_typo": 1}]}, "lr_typo"),
        ({"phases": [{"epochs": 2, "train": "backbone"}]}, r"phases\[0\]\.train: input should be 'head', 'all' or"),
        ({"phases": [{"epochs": 2, "train": "last_n"}]}, "last_n >= 1"),
        ({"phases": [{"epochs": 2, "train": "all", "last_n": 2}]}, "only applies"),
        ({"phases": [{"epochs": 0}]}, r"phases\[0\]\.epochs: input should be greater than or equal to 1"),
        ({"epochs": 3, "phases": [{"epochs": 2}]}, "per phase"),
        ({"monitor": "acc"}, "monitor"),
        ({"data": {**base["data"], "limit": 0}}, "limit"),
    ]
    for extra, match in bad:
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**base, **extra})
    assert config_from_dict(tiny_recipe("a", "b")).run_phases()[0].train == "all"


@pytest.mark.parametrize("arch", ["fervgg", "resnet18", "mobilenetv2"])
def test_head_phase_freezes_backbone_then_last_n_trains_only_the_last_blocks(tmp_path, small_fer_tree, arch):
    from ferkit.train.freeze import head_and_blocks
    from ferkit.train.run import build_from_config

    raw = phased_recipe(small_fer_tree, small_fer_tree, [{"epochs": 1, "train": "head", "lr": 0.05},
                                                         {"epochs": 1, "train": "last_n", "last_n": 2, "lr": 0.05}],
                        arch=arch)
    cfg = config_from_dict(raw)
    torch.manual_seed(cfg.seed)
    model = build_from_config(cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    head, blocks = head_and_blocks(model)
    assert len(blocks) >= 3
    run = tmp_path / "run"
    fit(cfg, run, progress=False, stop_after_epochs=1)
    after1 = load_file(run / "last.safetensors")
    fit(cfg, run, resume=True, progress=False)
    after2 = load_file(run / "last.safetensors")

    def owner(key):  # the parameter group a state_dict entry (weight, bias, BN buffer) belongs to
        module = key.rsplit(".", 1)[0]
        if any(n.rsplit(".", 1)[0] == module for n in head):
            return "head"
        for i, block in enumerate(blocks):
            if any(n.rsplit(".", 1)[0] == module for n in block):
                return i
        raise AssertionError(key)

    params = {n for n, _ in model.named_parameters()}
    for key, value in initial.items():
        o = owner(key)
        if o == "head":
            if key in params:
                assert not torch.equal(value, after1[key]), f"head {key} did not learn in phase 1"
        else:  # the backbone, weights and BatchNorm statistics alike, is untouched by the head phase
            assert torch.equal(value, after1[key]), f"backbone {key} changed in the head phase"
        if o == "head" or o >= len(blocks) - 2:
            continue
        assert torch.equal(after1[key], after2[key]), f"frozen {key} changed in phase 2"
    for block in blocks[-2:]:
        assert any(not torch.equal(after1[n], after2[n]) for n in block), f"{block[0]}... did not learn in phase 2"
    assert any(not torch.equal(after1[n], after2[n]) for n in head)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].endswith(",phase") and [r.split(",")[-1] for r in rows[1:]] == ["1", "2"]


def test_resume_exactly_at_and_after_the_phase_boundary(tmp_path, small_fer_tree):
    raw = phased_recipe(small_fer_tree, small_fer_tree,
                        [{"epochs": 2, "train": "head", "lr": 0.05},
                         {"epochs": 2, "train": "last_n", "last_n": 1, "lr": 0.02, "schedule": "cosine"}],
                        optim={"name": "adam", "lr": 1e-3}, schedule={"name": "onecycle"})
    cfg = config_from_dict(raw)
    fit(cfg, tmp_path / "reference", progress=False)
    for stop in (2, 3):  # at the boundary (phase 2's optimiser is fresh) and inside phase 2 (it is restored)
        run = tmp_path / f"stopped{stop}"
        fit(cfg, run, progress=False, stop_after_epochs=stop)
        assert len((run / "metrics.csv").read_text().splitlines()) == stop + 1
        fit(cfg, run, resume=True, progress=False)
        _same_weights(tmp_path / "reference", run)
        assert (tmp_path / "reference" / "metrics.csv").read_text().splitlines()[-1].split(",")[:7] == \
            (run / "metrics.csv").read_text().splitlines()[-1].split(",")[:7]


def test_resume_after_kill_across_the_phase_boundary(tmp_path, fer2013):
    raw = phased_recipe(fer2013, fer2013, [{"epochs": 2, "train": "head", "lr": 0.05},
                                           {"epochs": 2, "train": "last_n", "last_n": 2, "lr": 0.02}],
                        train_split="PublicTest", val_split="PrivateTest")
    kill_and_resume(tmp_path, raw, kill_after=2)


def test_early_stopping_ends_the_phase_not_the_run(tmp_path, small_fer_tree):
    # lr 0 in phase 2: nothing changes, so with patience 1 its second epoch shows no gain and the phase ends.
    raw = phased_recipe(small_fer_tree, small_fer_tree,
                        [{"epochs": 1, "train": "head"},
                         {"epochs": 5, "train": "all", "lr": 0.0, "early_stopping_patience": 1},
                         {"epochs": 1, "train": "all"}],
                        arch="small_cnn", schedule={"name": "none"})
    cfg = config_from_dict(raw)
    summary = fit(cfg, tmp_path / "reference", progress=False)
    rows = (tmp_path / "reference" / "metrics.csv").read_text().splitlines()[1:]
    assert summary["epochs_done"] == 4 and [r.split(",")[-1] for r in rows] == ["1", "2", "2", "3"]
    run = tmp_path / "stopped"
    fit(cfg, run, progress=False, stop_after_epochs=3)  # the checkpoint says phase 2 has ended
    assert fit(cfg, run, resume=True, progress=False)["epochs_done"] == 4
    _same_weights(tmp_path / "reference", run)


def test_monitor_loss_keeps_the_lowest_val_loss(tmp_path, small_fer_tree):
    import csv

    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=3, monitor="loss", schedule={"name": "plateau"})
    summary = fit(config_from_dict(raw), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "metrics.csv") as f:
        losses = [float(r["val_loss"]) for r in csv.DictReader(f)]
    assert summary["best_val"] == pytest.approx(min(losses))


def test_resume_accepts_a_run_recipe_written_before_new_keys(tmp_path, small_fer_tree):
    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=2)
    cfg = config_from_dict(raw)
    run = tmp_path / "run"
    fit(cfg, run, progress=False, stop_after_epochs=1)
    stored = yaml.safe_load((run / "recipe.yaml").read_text())
    for key in ("clahe", "limit", "val_limit"):  # what an older ferkit wrote lacks the newer keys
        del stored["data"][key]
    del stored["phases"]
    (run / "recipe.yaml").write_text(yaml.safe_dump(stored))
    assert fit(cfg, run, resume=True, progress=False)["epochs_done"] == 2
    other = config_from_dict({**raw, "seed": 8})
    with pytest.raises(ValueError, match="differs"):
        fit(other, run, resume=True, progress=False)


# ---- --limit, pretrained_path at load time, CLAHE ----

def test_limit_takes_the_same_seeded_sample_per_source(small_fer_tree):
    from ferkit.labels import space
    from ferkit.train.tensors import load_tensors

    labels = space("fer2013")
    full = load_tensors([(str(small_fer_tree), None)], labels, 48, 1)
    a = load_tensors([(str(small_fer_tree), None)] * 2, labels, 48, 1, limit=10, seed=3)
    b = load_tensors([(str(small_fer_tree), None)] * 2, labels, 48, 1, limit=10, seed=3)
    c = load_tensors([(str(small_fer_tree), None)], labels, 48, 1, limit=10, seed=4)
    assert len(a) == 20 and torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.images[:10], a.images[10:])  # per source: the same 10 of each copy
    assert not torch.equal(a.images[:10], c.images)
    rows = {bytes(img.numpy()) for img in full.images}
    assert all(bytes(img.numpy()) in rows for img in a.images)


def test_cli_limit_is_recorded_in_the_run_recipe(tmp_path, small_fer_tree):
    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "ferkit.cli", "train", str(recipe), "--out", str(out), "--epochs", "1",
                    "--limit", "40", "--val-limit", "20"], check=True, capture_output=True)
    stored = yaml.safe_load((out / "recipe.yaml").read_text())
    assert stored["data"]["limit"] == 40 and stored["data"]["val_limit"] == 20 and stored["epochs"] == 1


def test_load_run_model_does_not_reread_pretrained_path(tmp_path):
    from safetensors.torch import save_file

    from ferkit.train.run import build_from_config, load_run_model

    backbone = tmp_path / "imagenet_resnet18.safetensors"
    import timm

    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(backbone))
    raw = tiny_recipe("a", "b")
    raw["model"] = {"arch": "resnet18", "args": {"pretrained_path": str(backbone)}}
    raw["data"]["size"] = 32
    cfg = config_from_dict(raw)
    model = build_from_config(cfg)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict()))))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(run / "best.safetensors"))
    backbone.unlink()  # the backbone file is gone; the run's own weights are all that is needed
    loaded, _ = load_run_model(run)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_clahe_recipe_trains_on_clahe_images_and_the_package_applies_it(tmp_path, small_fer_tree):
    import cv2
    import numpy as np

    from ferkit.faces.enhance import apply_clahe
    from ferkit.labels import space
    from ferkit.packages import read_card
    from ferkit.runtime import ModelRuntime
    from ferkit.train.export_run import export_run
    from ferkit.train.tensors import load_tensors

    labels = space("fer2013")
    plain = load_tensors([(str(small_fer_tree), None)], labels, 32, 1)
    clahe = load_tensors([(str(small_fer_tree), None)], labels, 32, 1, clahe=True)
    for p, c in zip(plain.images, clahe.images):
        assert np.array_equal(apply_clahe(p[0].numpy()), c[0].numpy())
    assert not torch.equal(plain.images, clahe.images)

    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=1)
    raw["data"].update(size=32, clahe=True)
    raw["model"]["args"] = {"widths": [8, 16, 16], "hidden": 16}
    fit(config_from_dict(raw), tmp_path / "run", progress=False)
    card = export_run(tmp_path / "run", tmp_path / "pkg", evaluate=False)
    assert card.clahe and read_card(tmp_path / "pkg").clahe
    rt = ModelRuntime(tmp_path / "pkg")
    crop = cv2.imread(str(next(small_fer_tree.glob("happy/*.jpg"))), cv2.IMREAD_GRAYSCALE)
    expected = apply_clahe(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA)).astype(np.float32) / 255
    assert np.allclose(rt.preprocess([crop])[0, 0], (expected - 0.5) / 0.5)
    rt.card.clahe = False
    assert not np.allclose(rt.preprocess([crop])[0, 0], (expected - 0.5) / 0.5)


# ---- resume refuses what it cannot resume exactly ----

def test_resume_with_no_run_refuses_and_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path,
                                                                                               small_fer_tree):
    from ferkit.train.run import RunError

    cfg = config_from_dict(tiny_recipe(small_fer_tree, small_fer_tree, epochs=1))
    empty = tmp_path / "empty"
    with pytest.raises(RunError, match="no run to resume"):
        fit(cfg, empty, resume=True, progress=False)
    assert not empty.exists()  # the refusal leaves nothing behind
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(small_fer_tree, small_fer_tree, epochs=1)))
    proc = subprocess.run([sys.executable, "-m", "ferkit.cli", "train", str(recipe), "--resume", "--out",
                           str(tmp_path / "cli")], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().endswith("drop --resume to start one")
    assert len(proc.stderr.strip().splitlines()) == 1

    started = tmp_path / "started"  # killed during epoch 1: a recipe, no checkpoint yet
    fit(cfg, started, progress=False, stop_after_epochs=0)
    assert (started / "recipe.yaml").exists() and not (started / "train_state.pt").exists()
    assert fit(cfg, started, resume=True, progress=False)["epochs_done"] == 1


def test_a_checkpoint_torn_between_weights_and_state_is_refused(tmp_path, small_fer_tree):
    import shutil

    from ferkit.train.run import RunError

    raw = tiny_recipe(small_fer_tree, small_fer_tree, epochs=3)
    cfg = config_from_dict(raw)
    run = tmp_path / "run"
    fit(cfg, run, progress=False, stop_after_epochs=1)
    shutil.copy(run / "train_state.pt", tmp_path / "state_epoch1.pt")
    fit(cfg, run, resume=True, progress=False, stop_after_epochs=2)
    # A kill after epoch 2's weights were written but before its state was: epoch-2 weights, epoch-1 state.
    shutil.copy(tmp_path / "state_epoch1.pt", run / "train_state.pt")
    with pytest.raises(RunError, match="torn checkpoint: last.safetensors is from epoch 2 but train_state.pt from "
                                       "epoch 1") as info:
        fit(cfg, run, resume=True, progress=False)
    assert "start it again without --resume" in str(info.value) and "\n" not in str(info.value)

    # the same epoch on both sides but from another save (a rerun's weights copied in) is torn as well
    other = tmp_path / "other"
    fit(cfg, other, progress=False, stop_after_epochs=1)
    shutil.copy(other / "last.safetensors", run / "last.safetensors")
    with pytest.raises(RunError, match="torn checkpoint"):
        fit(cfg, run, resume=True, progress=False)

    # a truncated state file or missing weights: one line each, never a traceback
    (run / "train_state.pt").write_bytes((tmp_path / "state_epoch1.pt").read_bytes()[:200])
    with pytest.raises(RunError, match="unreadable training state"):
        fit(cfg, run, resume=True, progress=False)
    shutil.copy(tmp_path / "state_epoch1.pt", run / "train_state.pt")
    (run / "last.safetensors").unlink()
    with pytest.raises(RunError, match="has no last.safetensors"):
        fit(cfg, run, resume=True, progress=False)


def test_a_gpu_hardware_record_names_the_gpu():
    from ferkit.train.card import hardware_text

    record = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "cpu": "AMD EPYC 9454", "cpu_cores": 16,
              "precision": "bf16"}
    assert hardware_text(record) == "NVIDIA H100 80GB HBM3 (cuda), bf16"
    assert hardware_text({**record, "device": "cpu", "gpu": None, "precision": "fp32"}) == "AMD EPYC 9454 (16 cores), fp32"
