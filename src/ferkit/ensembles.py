"""`ferkit ensemble build`: member packages -> an ensemble package, with member selection on a validation split.

Each candidate member classifies the validation images once; every weighting and every candidate subset is then
scored from those probabilities with :mod:`ferkit.combine` (the same maths the run-time ensemble uses), so
selection costs no extra model calls. Selection never sees the test split: PrivateTest and Training are refused.

- ``topk`` (seed 001): members ordered by validation accuracy; the ensemble of the top k for k = 1..M is scored
  (seed 001's accuracy-vs-k curve) and the best k kept (the smallest on ties), unless ``k`` is given.
- ``greedy`` (forward selection): start from the best member, repeatedly add the member that raises validation
  accuracy most (ties: the more accurate member), score every prefix, keep the best one.

The package (see :mod:`ferkit.packages.ensemble`) holds a copy of each chosen member under ``members/``; with
selection, ``accuracy_vs_k.png`` (the curve) is written into the package folder and the numbers into the card.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferkit import __version__
from ferkit.classify import PackageClassifier
from ferkit.combine import combine, member_weights
from ferkit.errors import UserInputError
from ferkit.io import atomic_write
from ferkit.packages import PackageError, card_kind, resolve_folder
from ferkit.packages.ensemble import MEMBERS_DIR, METHODS, EnsembleCard, Member, union_labels, write_ensemble_card
from ferkit.runtime import DEFAULT_TTA

SELECTIONS = ("topk", "greedy")
CURVE_PNG = "accuracy_vs_k.png"
REFUSED_SPLITS = {"PrivateTest": "the test split", "Training": "the training split"}


def accuracy(probs: np.ndarray, labels: Sequence[str], truths: Sequence[str]) -> float:
    """Top-1 accuracy over the samples whose true label the classifier can output."""
    index = {lab: i for i, lab in enumerate(labels)}
    keep = [i for i, t in enumerate(truths) if t in index]
    if not keep:
        return 0.0
    y = np.array([index[truths[i]] for i in keep])
    return float((probs[keep].argmax(1) == y).mean())


def validation_set(data: str | os.PathLike, split: str | None, ferplus_mode: str = "majority"):
    """(images, true labels, split scored) of a validation split; the test and training splits are refused."""
    from ferkit.data import decode, open_dataset
    from ferkit.evaluate import choose_split

    dataset = open_dataset(data, ferplus_mode)
    split = choose_split(dataset, split or ("PublicTest" if "PublicTest" in dataset.splits else "all"))
    if split in REFUSED_SPLITS:
        raise UserInputError(f"--split {split} is {REFUSED_SPLITS[split]}: members are selected and weighted on a "
                             "validation split only (PublicTest)")
    entries = dataset.split(None if split == "all" else split)
    if not entries:
        raise UserInputError(f"{data}: no entries in split {split!r} to select members on")
    samples = list(decode(entries, "rgb", []))
    return [s.image for s in samples], [s.label for s in samples], split


class Candidates:
    """The candidate members with their validation probabilities, and ensembles of any subset scored from them."""

    def __init__(self, members: Sequence[PackageClassifier], method: str, manual: Sequence[float] | None,
                 images: Sequence[np.ndarray] | None, truths: Sequence[str], tta: str) -> None:
        self.members, self.method, self.manual, self.truths = list(members), method, manual, list(truths)
        self.probs = [m.predict_proba(images, tta) for m in members] if images is not None else []
        self.accuracies = [accuracy(p, m.labels, truths) for p, m in zip(self.probs, members)] or None
        self.union = union_labels([m.labels for m in members])

    def weights(self, subset: Sequence[int]) -> np.ndarray:
        acc = [self.accuracies[i] for i in subset] if self.accuracies else None
        manual = [self.manual[i] for i in subset] if self.manual else None
        return member_weights(self.method, len(subset), acc, manual)

    def score(self, subset: Sequence[int]) -> float:
        probs = combine([self.probs[i] for i in subset], [self.members[i].labels for i in subset], self.union,
                        self.method, self.weights(subset))
        return accuracy(probs, self.union, self.truths)


def select(c: Candidates, how: str, k: int | None) -> tuple[list[int], list[dict[str, Any]]]:
    """(chosen member indices, the accuracy-vs-k curve: [{k, accuracy, members}])."""
    n = len(c.members)
    by_accuracy = sorted(range(n), key=lambda i: (-c.accuracies[i], i))
    curve = []
    if how == "topk":
        for size in range(1, n + 1):
            subset = by_accuracy[:size]
            curve.append({"k": size, "accuracy": c.score(subset), "index": subset})
    else:
        chosen = [by_accuracy[0]]
        curve.append({"k": 1, "accuracy": c.accuracies[chosen[0]], "index": list(chosen)})
        while len(chosen) < n:
            rest = [i for i in by_accuracy if i not in chosen]
            best = max(rest, key=lambda i: (c.score(chosen + [i]), c.accuracies[i]))
            chosen.append(best)
            curve.append({"k": len(chosen), "accuracy": c.score(chosen), "index": list(chosen)})
    if k is not None:
        if not 1 <= k <= n:
            raise UserInputError(f"--k {k}: choose 1 to {n} (the number of models given)")
        pick = curve[k - 1]
    else:
        pick = max(curve, key=lambda row: (row["accuracy"], -row["k"]))
    for row in curve:
        row["members"] = [str(c.members[i].folder) for i in row["index"]]
    return list(pick["index"]), [{k: v for k, v in row.items() if k != "index"} for row in curve]


def plot_curve(curve: list[dict[str, Any]], members: dict[str, float], chosen_k: int, how: str, split: str,
               path: Path) -> Path:
    """Seed 001's plot: validation accuracy of the ensemble of k members against k, the best single member
    dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    ks = [row["k"] for row in curve]
    ax.plot(ks, [100 * row["accuracy"] for row in curve], marker="o", label=f"ensemble ({how})")
    ax.axhline(100 * max(members.values()), ls="--", color="grey", label="best single member")
    ax.scatter([chosen_k], [100 * curve[chosen_k - 1]["accuracy"]], s=120, facecolors="none", edgecolors="red",
               label=f"chosen: k={chosen_k}", zorder=3)
    ax.set_xlabel("members (k)")
    ax.set_ylabel(f"accuracy on {split} (%)")
    ax.set_xticks(ks)
    ax.legend()
    ax.set_title("ensemble accuracy vs number of members (validation)")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _member_names(members: Sequence[PackageClassifier]) -> list[str]:
    """Each member's card name, made unique (name, name-2, ...) and safe as a folder name."""
    names: list[str] = []
    for m in members:
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in m.name).strip(".") or "member"
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def build_ensemble(models: Sequence[str | os.PathLike], out: str | os.PathLike, method: str = "average",
                   weights: Sequence[float] | None = None, selection: str | None = None,
                   val: str | os.PathLike | None = None, split: str | None = None, k: int | None = None,
                   name: str | None = None, tta: str = DEFAULT_TTA, ferplus_mode: str = "majority",
                   command: str = "") -> EnsembleCard:
    """Build an ensemble package in ``out`` from model packages (see the module docstring). ``weights`` only for
    ``method='manual'``; ``val`` is needed for rank/accuracy weights and for ``selection``; ``tta`` is the TTA the
    members are scored with on ``val``."""
    if method not in METHODS:
        raise UserInputError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if selection is not None and selection not in SELECTIONS:
        raise UserInputError(f"--select must be one of {', '.join(SELECTIONS)}, not {selection!r}")
    if len(models) < 2:
        raise UserInputError("an ensemble needs at least two models")
    if weights is not None and method != "manual":
        raise UserInputError("--weights goes with --method manual")
    if (selection or method in ("rank", "accuracy")) and val is None:
        need = f"--select {selection}" if selection else f"--method {method}"
        raise UserInputError(f"{need} needs a validation set: give --val DATA (scored on its PublicTest split)")
    for model in models:
        folder = resolve_folder(model)
        if card_kind(folder) != "model":
            raise PackageError(f"{folder}: an ensemble cannot be a member; give its members' packages instead")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"--out {out}: exists and is not empty; choose a new folder")
    members = [PackageClassifier(m, tta=tta) for m in models]
    member_weights(method, len(members), [1.0] * len(members), weights)  # checks manual weights now
    images, truths, scored = (validation_set(val, split, ferplus_mode) if val is not None else (None, [], None))
    cands = Candidates(members, method, weights, images, truths, tta)
    subset, curve = list(range(len(members))), None
    if selection:
        subset, curve = select(cands, selection, k)
    chosen = [members[i] for i in subset]
    names = _member_names(chosen)
    w = cands.weights(subset)
    card = EnsembleCard(name=name or out.name, labels=union_labels([m.labels for m in chosen]), method=method,
                        members=[Member(n, f"{MEMBERS_DIR}/{n}", round(float(x), 6)) for n, x in zip(names, w)],
                        training={"command": command, "ferkit_version": __version__,
                                  "tta_on_validation": tta if val is not None else None})
    if val is not None:
        member_acc = {str(m.folder): cands.accuracies[i] for i, m in enumerate(members)}
        card.metrics = {"validation": {"data": str(val), "split": scored, "n": len(truths), "tta": tta,
                                       "accuracy": cands.score(subset), "members": member_acc}}
    if curve is not None:
        card.selection = {"how": selection, "data": str(val), "split": scored, "n": len(truths), "tta": tta,
                          "k": len(subset), "k_given": k is not None, "curve": curve, "plot": CURVE_PNG}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for member, folder_name in zip(chosen, names):
            shutil.copytree(member.folder, tmp / MEMBERS_DIR / folder_name)
        if curve is not None:
            plot_curve(curve, member_acc, len(subset), selection, scored, tmp / CURVE_PNG)
        write_ensemble_card(tmp, card)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card
