"""Every training recipe in configs/ (except the shipped default's two stages: they take hours, and stage 2 starts from
stage 1's run; tests/test_distill.py covers its warm start and distillation) runs end to end through the real
`ferkit train` command on the real data, cut down to a smoke run: one epoch per phase, the first N training samples
of each source (`--limit`, seeded), a small validation sample (`--val-limit`) and batch size 64.

Every recipe runs at its own input size. seed002_resmasknet (137.8M parameters) takes 128 training samples instead
of 256: its smoke run is dominated by building the net and writing ~1.6 GB of checkpoints (weights, best weights,
SGD momentum), ~25 s on one busy core; at 32 px instead of 48 it saves only ~3 s, so the size is left alone.
Whole file: ~100 s on one core shared with a training run.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import DATA, REPO

RECIPES = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("default"))
SMOKE = {"limit": 256, "val_limit": 128, "batch_size": 64}
OVERRIDES = {"seed002_resmasknet.yaml": {"limit": 128}}


def test_there_is_a_recipe_per_seed():
    names = {p.name for p in RECIPES}
    for seed in ("seed000", "seed001", "seed002", "seed003", "seed004"):
        assert any(n.startswith(seed) for n in names), seed


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs(recipe, tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"needs the shared data folder {DATA} (../shared/data next to the repo, or set FERKIT_SHARED)")
    text = recipe.read_text()
    raw = yaml.safe_load(text.replace("../shared/data", str(DATA)))
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head, f"{recipe.name}: the recipe needs a header comment saying what it trains and why"
    if recipe.name.startswith("seed"):
        assert "seed" in head[0].lower() and any("scaled down" in line.lower() for line in head), \
            f"{recipe.name}: a paper's recipe must cite the seed and say what was scaled down and why"
    over = {**SMOKE, **OVERRIDES.get(recipe.name, {})}
    raw["batch_size"] = over["batch_size"]
    if "size" in over:
        raw["data"]["size"] = over["size"]
    smoke = tmp_path / recipe.name
    smoke.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "-m", "ferkit.cli", "train", str(smoke), "--out", str(out), "--epochs", "1",
           "--limit", str(over["limit"]), "--val-limit", str(over["val_limit"])]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    phases = len(raw.get("phases") or [None])
    assert f"run {out}: {phases} epoch{'s' if phases != 1 else ''}," in proc.stdout, proc.stdout + proc.stderr[-2000:]
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert len(metrics) == phases + 1
    assert [r.split(",")[-1] for r in metrics[1:]] == [str(i + 1) for i in range(phases)]
    stored = yaml.safe_load((out / "recipe.yaml").read_text())
    assert stored["data"]["limit"] == over["limit"] and stored["data"]["val_limit"] == over["val_limit"]
    assert (out / "best.safetensors").exists()
    for name in ("curves.png", "card.json", "validation/confusion.png"):
        assert (out / name).exists(), name
