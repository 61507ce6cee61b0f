"""Dataset statistics (`ferkit data stats`): what is in a dataset before anyone trains on it.

Counts per split and class, image sizes and modes, unreadable files, and for FER+ how each labelling protocol
includes or excludes images, so the numbers in a paper's protocol can be checked against the data on disk.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferkit.data.readers import FERPLUS_LABEL_MODES, Dataset, is_ferplus_folder, open_dataset
from ferkit.data.samples import SPLITS, Problem
from ferkit.io import ImageError, decode_image


CHECK_SIDE = 256
"""Images are checked by decoding them reduced to at most this many pixels on the longer side."""


@dataclass
class DatasetStats:
    root: str
    kind: str
    counts: dict[str, dict[str, int]]
    sizes: Counter
    modes: Counter
    problems: list[Problem]
    ignored: dict[str, int]
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "kind": self.kind,
            "counts": self.counts,
            "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.most_common()},
            "modes": dict(self.modes.most_common()),
            "unreadable": [p.reason for p in self.problems],
            "ignored": self.ignored,
            "protocols": self.protocols,
        }


def _split_key(split: str | None) -> str:
    return split or "(no split)"


def _count(dataset: Dataset) -> dict[str, dict[str, int]]:
    table: dict[str, Counter] = defaultdict(Counter)
    for e in dataset.entries:
        table[_split_key(e.split)][e.label] += 1
    order = [s for s in SPLITS if s in table] + sorted(s for s in table if s not in SPLITS)
    return {s: dict(sorted(table[s].items())) for s in order}


def dataset_stats(path: str | Path, check_images: bool = True) -> DatasetStats:
    """Gather statistics; with ``check_images`` every image is decoded to find unreadable files.

    An image over ferkit's pixel limit, corrupt or not an image is listed as unreadable (one line each) and the
    rest is still counted. Images are decoded at a reduced size (JPEG by DCT scaling): the check needs every byte
    read, not every pixel kept, and sizes and modes come from the file's header.
    """
    dataset = open_dataset(path, "plurality" if is_ferplus_folder(path) else "majority")
    sizes: Counter = Counter()
    modes: Counter = Counter()
    problems: list[Problem] = dataset.problems()
    if check_images:
        for e in dataset.entries:
            if e.pixels is not None:
                sizes[(e.pixels.shape[1], e.pixels.shape[0])] += 1
                modes["L"] += 1
                continue
            try:
                image = decode_image(e.source, "gray", max_side=CHECK_SIDE)
            except ImageError as exc:
                problems.append(Problem(e.source, str(exc)))
                continue
            sizes[(image.width, image.height)] += 1
            modes[image.file_mode] += 1
    stats = DatasetStats(str(path), dataset.kind, _count(dataset), sizes, modes, problems, dataset.ignored)
    if is_ferplus_folder(path):
        for mode in FERPLUS_LABEL_MODES:
            d = dataset if mode == "plurality" else open_dataset(path, mode)
            stats.protocols[mode] = {"included": _count(d), "excluded": d.ignored}
    return stats


def format_stats(stats: DatasetStats) -> str:
    """A readable table: classes down, splits across, with totals; then sizes, modes and problems."""
    splits = list(stats.counts)
    labels = sorted({lab for c in stats.counts.values() for lab in c})
    width = max([10, *map(len, splits)]) + 1
    lines = [f"{stats.root} ({stats.kind})", f"{'class':<10}" + "".join(f"{s:>{width}}" for s in splits) + f"{'total':>{width}}"]
    for lab in labels:
        row = [stats.counts[s].get(lab, 0) for s in splits]
        lines.append(f"{lab:<10}" + "".join(f"{n:>{width}}" for n in row) + f"{sum(row):>{width}}")
    totals = [sum(stats.counts[s].values()) for s in splits]
    lines.append(f"{'total':<10}" + "".join(f"{n:>{width}}" for n in totals) + f"{sum(totals):>{width}}")
    if stats.sizes:
        lines.append("sizes: " + ", ".join(f"{w}x{h}: {n}" for (w, h), n in stats.sizes.most_common(5)))
        lines.append("modes: " + ", ".join(f"{m}: {n}" for m, n in stats.modes.most_common()))
    for mode, proto in stats.protocols.items():
        included = {s: sum(c.values()) for s, c in proto["included"].items()}
        lines.append(f"FER+ {mode}: included {included}; excluded {proto['excluded'] or 0}")
    if stats.ignored and not stats.protocols:
        lines.append(f"ignored: {stats.ignored}")
    lines.append(f"unreadable: {len(stats.problems)}")
    lines.extend(f"  {p.reason}" for p in stats.problems)
    return "\n".join(lines)
