"""Turn dataset entries into in-memory uint8 tensors for training.

FER datasets are small (FER2013 is 66 MB as 48x48 uint8), so holding them in memory and slicing batches beats a
DataLoader with per-image workers on two cores, and keeps shuffling a function of the seed alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ferkit.data import Entry, Problem, decode, open_dataset
from ferkit.faces.enhance import apply_clahe
from ferkit.io import colour_mode
from ferkit.labels import index_map


@dataclass
class TensorSet:
    """Images (N, C, H, W) uint8, class indices (N,) in ``labels`` order, optional soft targets (N, classes)."""

    images: torch.Tensor
    targets: torch.Tensor
    labels: tuple[str, ...]
    soft: torch.Tensor | None
    problems: list[Problem]
    skipped_labels: dict[str, int]

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def limit_entries(entries: Sequence[Entry], limit: int | None, seed: int) -> list[Entry]:
    """The first ``limit`` entries after a shuffle seeded by ``seed`` (all of them, in order, when ``limit`` is None).

    The kept entries stay in their original order, so the same (entries, limit, seed) always give the same list.
    """
    if limit is None or limit >= len(entries):
        return list(entries)
    if limit < 1:
        raise ValueError(f"limit must be a positive number of samples, not {limit}")
    order = torch.randperm(len(entries), generator=torch.Generator().manual_seed(seed))[:limit]
    return [entries[i] for i in sorted(order.tolist())]


def load_tensors(sources: Sequence[tuple[str, str | None]], labels: Sequence[str], size: int, channels: int,
                 ferplus_mode: str = "majority", clahe: bool = False, limit: int | None = None,
                 seed: int = 0) -> TensorSet:
    """Decode every (path, split) source, resize to ``size``, and keep samples whose label the model has.

    ``clahe`` applies :func:`ferkit.faces.enhance.apply_clahe` to each image *after* resizing to ``size``, which
    is what :meth:`ferkit.runtime.ModelRuntime.preprocess` does to a crop at run time (train and run time match).
    ``limit`` keeps, per source, the first ``limit`` samples with a known label after a shuffle seeded by ``seed``
    (see :func:`limit_entries`); only those are decoded.
    """
    index = index_map(labels)
    images: list[np.ndarray] = []
    targets: list[int] = []
    soft: list[np.ndarray] = []
    any_votes = True
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    mode = colour_mode(channels)
    for path, split in sources:
        dataset = open_dataset(path, ferplus_mode)
        entries = dataset.split(split)
        problems.extend(dataset.problems(split))
        if limit is not None:
            for e in entries:
                if e.label not in index:
                    skipped[str(e.label)] = skipped.get(str(e.label), 0) + 1
            entries = limit_entries([e for e in entries if e.label in index], limit, seed)
        for s in decode(entries, mode, problems):
            if s.label not in index:
                skipped[s.label] = skipped.get(s.label, 0) + 1
                continue
            img = s.image
            if img.shape[:2] != (size, size):
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            if clahe:
                img = apply_clahe(img)
            images.append(img.reshape(size, size, channels))
            targets.append(index[s.label])
            if s.votes is None:
                any_votes = False
            else:
                vec = np.array([s.votes.get(lab, 0.0) for lab in labels], dtype=np.float32)
                soft.append(vec / max(vec.sum(), 1e-8))
    if not images:
        raise ValueError(f"no usable samples in {[p for p, _ in sources]} for labels {list(labels)}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return TensorSet(x, torch.tensor(targets), tuple(labels),
                     torch.from_numpy(np.stack(soft)) if any_votes and soft else None, problems, skipped)
