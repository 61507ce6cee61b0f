"""Class counts and the two class-weighting formulas the papers use against FER2013's imbalance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ferkit.data.samples import Entry

WEIGHTINGS = ("seed003", "seed004")


def class_counts(entries: Iterable[Entry], labels: Sequence[str] | None = None) -> dict[str, int]:
    """Entries per label; with ``labels`` given, in that order and including zero counts."""
    counts = Counter(e.label for e in entries if e.label is not None)
    order = labels if labels is not None else sorted(counts)
    return {label: counts.get(label, 0) for label in order}


def class_weights(counts: dict[str, int], formula: str = "seed004") -> dict[str, float]:
    """Per-class loss weights.

    - ``seed003`` (van der Weel): w_i = max(R) / (C * n_i) with R the class ratios n_i / N, C the class count:
      the largest class gets 1/C and the rest scale up in inverse proportion to their size.
    - ``seed004`` (Savchenko): w_y = max_c N_c / N_y, the largest class weighs 1.
    Empty classes get weight 0 (they never occur in the loss).
    """
    present = {k: n for k, n in counts.items() if n > 0}
    if not present:
        raise ValueError("class weights need at least one non-empty class")
    largest = max(present.values())
    if formula == "seed003":
        total = sum(present.values())
        c = len(counts)
        max_ratio = largest / total
        return {k: (max_ratio / (c * n / total)) if n else 0.0 for k, n in counts.items()}
    if formula == "seed004":
        return {k: (largest / n) if n else 0.0 for k, n in counts.items()}
    raise ValueError(f"class weighting must be one of {WEIGHTINGS}, not {formula!r}")
