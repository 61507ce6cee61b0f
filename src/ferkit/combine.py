"""How an ensemble turns its members' probabilities into one answer: member weights and the combination maths.

Pure NumPy on arrays already computed, so `ferkit ensemble build` scores every candidate ensemble on the validation
split from one pass of each member (selection costs no extra model calls), and the run-time ensemble uses the same
functions.

Members with different label sets are combined by name: each member's probabilities are moved into the union of
labels with :func:`ferkit.labels.map_probs`, and a label is averaged over the members that can output it (a 7-class
member abstains on contempt rather than voting 0 for it), then each row is renormalised.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkit.errors import UserInputError
from ferkit.labels import map_probs
from ferkit.packages.ensemble import METHODS


def ranks(values: Sequence[float]) -> np.ndarray:
    """R(A_i): 1 for the lowest value, n for the highest; tied values share their mean rank."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        same = v == value
        r[same] = r[same].mean()
    return r


def member_weights(method: str, n: int, accuracies: Sequence[float] | None = None,
                   manual: Sequence[float] | None = None) -> np.ndarray:
    """Weights summing to 1. vote, average: equal (seed 001's majority vote, seed 002's unweighted average); rank:
    w_i = R(A_i) / sum R(A_i) on validation accuracy (seed 000); accuracy: w_i = A_i / sum A_i; manual: as given,
    normalised."""
    if method not in METHODS:
        raise UserInputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if method in ("vote", "average"):
        w = np.ones(n)
    elif method == "manual":
        if manual is None or len(manual) != n:
            raise UserInputError(f"--method manual needs one weight per member ({n}), not "
                                 f"{'none' if manual is None else len(manual)} (--weights 0.6,0.4)")
        w = np.asarray(manual, dtype=np.float64)
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise UserInputError(f"--weights must be numbers >= 0 with a positive sum, not {list(manual)}")
    else:
        if accuracies is None or len(accuracies) != n:
            raise UserInputError(f"--method {method} weighs members by validation accuracy: give --val DATA")
        w = ranks(accuracies) if method == "rank" else np.asarray(accuracies, dtype=np.float64)
        if w.sum() <= 0:
            w = np.ones(n)
    return w / w.sum()


def combine(probs: Sequence[np.ndarray], labels: Sequence[Sequence[str]], union: Sequence[str], method: str,
            weights: Sequence[float]) -> np.ndarray:
    """The ensemble's probabilities (N, len(union)) from each member's (N, len(labels[i])).

    average, rank, accuracy, manual: per label, the weighted mean of the members that output it, renormalised.
    vote: each member votes for its top label; the ensemble reports (votes_k + mean_k) / (M + 1), where mean_k is
    the members' mean probability: the vote share with the mean probability counted as one extra voter. Its top
    label is always the majority vote (one vote outweighs any difference of mean probabilities), ties broken by the
    mean probability (seed 001 leaves ties to chance), and it still sums to 1.
    """
    m = len(probs)
    if m == 0:
        raise ValueError("an ensemble needs at least one member")
    aligned = np.stack([map_probs(p, lab, union, renormalise=False) for p, lab in zip(probs, labels)])  # (M, N, K)
    has = np.array([[u in set(lab) for u in union] for lab in labels], dtype=np.float64)  # (M, K)
    w = np.ones(m) if method == "vote" else np.asarray(weights, dtype=np.float64)
    wk = w[:, None] * has  # (M, K)
    den = wk.sum(0)
    mean = np.einsum("mk,mnk->nk", wk, aligned) / np.where(den > 0, den, 1.0)
    sums = mean.sum(1, keepdims=True)
    mean = np.divide(mean, sums, out=np.full_like(mean, 1.0 / mean.shape[1]), where=sums > 0)
    if method != "vote":
        return mean.astype(np.float32)
    top = aligned.argmax(2)  # (M, N): each member's vote, in union columns
    votes = np.zeros_like(mean)
    for vote in top:
        votes[np.arange(len(vote)), vote] += 1
    return ((votes + mean) / (m + 1)).astype(np.float32)
