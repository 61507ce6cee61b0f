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

from ferkit.data import Problem, decode, open_dataset
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


def load_tensors(sources: Sequence[tuple[str, str | None]], labels: Sequence[str], size: int, channels: int,
                 ferplus_mode: str = "majority") -> TensorSet:
    """Decode every (path, split) source, resize to ``size``, and keep samples whose label the model has."""
    index = index_map(labels)
    images: list[np.ndarray] = []
    targets: list[int] = []
    soft: list[np.ndarray] = []
    any_votes = True
    problems: list[Problem] = []
    skipped: dict[str, int] = {}
    mode = "gray" if channels == 1 else "rgb"
    for path, split in sources:
        entries = open_dataset(path, ferplus_mode).split(split)
        for s in decode(entries, mode, problems):
            if s.label not in index:
                skipped[s.label] = skipped.get(s.label, 0) + 1
                continue
            img = s.image
            if img.shape[:2] != (size, size):
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
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
