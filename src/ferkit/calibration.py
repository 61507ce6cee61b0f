"""Calibrated confidence: fit a temperature (or per-class vector scaling) on validation probabilities, apply it to
any classifier's probabilities, and measure calibration (ECE, NLL, Brier score, reliability diagram data).

Why on probabilities, not logits: a package's graph ends in logits, but an ensemble's combined output, a flip-TTA
average or a package from another exporter is only a probability matrix. ``softmax(log(p) / T)`` is temperature
scaling for a single model (``log p`` equals the logits up to a per-row constant) and still a well-defined,
rank-preserving recalibration for everything else, so one function serves every classifier.

A card's ``calibration`` field (what :func:`fit_modes` returns plus provenance)::

    {"method": "temperature" | "vector", "fitted_on": "<data> <split>", "n": 3589, "command": "ferkit calibrate ...",
     "per_tta": {"none": {"temperature": 0.66, "before": {"ece":..,"nll":..,"brier":..}, "after": {...}},
                 "flip": {...}}}

Vector scaling adds ``"scale": {label: s}, "bias": {label: b}`` per mode (labels by name) and computes
``softmax(s * log p + b)``; its ridge strength ``l2`` (towards the temperature solution) is chosen by 5-fold
cross-validation on the fitting rows, so 14 parameters cannot memorise a 3,589-row validation split.

Only NumPy at import time (the runtime imports this module); SciPy's optimisers are imported by the fitting code.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import UserInputError

log = logging.getLogger(__name__)

METHODS = ("temperature", "vector")
N_BINS = 15
"""Equal-width confidence bins for ECE and the reliability diagram (Guo et al. 2017 use 15)."""
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""Ridge strengths that vector scaling's cross-validation chooses from."""
_EPS = 1e-12
_T_BOUNDS = (0.05, 20.0)


class CalibrationError(UserInputError):
    """A calibration block (in a card) or a fitting request that cannot be used."""


# ---- metrics --------------------------------------------------------------------------------------------------


def _check(probs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if probs.ndim != 2 or y.shape != (probs.shape[0],):
        raise ValueError(f"expected probabilities (N, K) and N class indices, got {probs.shape} and {y.shape}")
    return probs, y


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (natural log; probabilities clipped at 1e-12)."""
    probs, y = _check(probs, y)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], _EPS, None)))) if len(y) else float("nan")


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of sum_k (p_k - [k == y])^2 (0 is perfect, 2 the worst)."""
    probs, y = _check(probs, y)
    if not len(y):
        return float("nan")
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(((probs - onehot) ** 2).sum(axis=1)))


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, list]:
    """Top-1 confidence against accuracy in ``n_bins`` equal-width bins ((0, 1/n], ..., ((n-1)/n, 1]).

    Per bin: its edges, the number of rows, their mean confidence and their accuracy (None for an empty bin).
    """
    probs, y = _check(probs, y)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(bins, weights=correct.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = conf_sum / count, hit_sum / count
    return {"lower": [round(i / n_bins, 6) for i in range(n_bins)],
            "upper": [round((i + 1) / n_bins, 6) for i in range(n_bins)],
            "count": count.tolist(),
            "confidence": [None if c == 0 else float(v) for c, v in zip(count, mean_conf)],
            "accuracy": [None if c == 0 else float(v) for c, v in zip(count, acc)]}


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum over bins of (rows in bin / N) * |accuracy - mean top-1 confidence|."""
    return _ece_of(reliability(probs, y, n_bins))


def _ece_of(r: Mapping[str, list]) -> float:
    n = sum(r["count"])
    if not n:
        return float("nan")
    return float(sum(c / n * abs(a - m) for c, a, m in zip(r["count"], r["accuracy"], r["confidence"]) if c))


def calibration_metrics(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE, NLL, Brier score, mean top-1 confidence and the reliability bins of probabilities against truths."""
    probs, y = _check(probs, y)
    r = reliability(probs, y, n_bins)
    return {"ece": _ece_of(r), "nll": nll(probs, y), "brier": brier(probs, y),
            "mean_confidence": float(probs.max(axis=1).mean()) if len(y) else float("nan"), "reliability": r}


def summary(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The three numbers a card keeps (ECE, NLL, Brier), rounded to 4 places."""
    m = calibration_metrics(probs, y)
    return {k: round(m[k], 4) for k in ("ece", "nll", "brier")}


# ---- fitting --------------------------------------------------------------------------------------------------


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, None))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll_of_logits(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The temperature T in [0.05, 20] that minimises the NLL of ``softmax(log(p) / T)`` on these rows.

    The NLL is convex in 1/T (log-sum-exp of a linear function), so a bounded 1-D search finds the global minimum.
    """
    from scipy.optimize import minimize_scalar

    probs, y = _check(probs, y)
    if not len(y):
        raise CalibrationError("no rows to fit a calibration on")
    z = _log_probs(probs)
    lo, hi = 1 / _T_BOUNDS[1], 1 / _T_BOUNDS[0]
    best = minimize_scalar(lambda beta: _nll_of_logits(z * beta, y), bounds=(lo, hi), method="bounded",
                           options={"xatol": 1e-7})
    return float(1.0 / best.x)


def _fit_vector_l2(z: np.ndarray, y: np.ndarray, l2: float, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scale s and bias b minimising NLL(softmax(s * z + b)) + l2 * (|s - beta|^2 + |b|^2)."""
    from scipy.optimize import minimize

    n, k = z.shape
    onehot = np.zeros_like(z)
    onehot[np.arange(n), y] = 1.0

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s, b = w[:k], w[k:]
        logits = z * s + b
        logits -= logits.max(axis=1, keepdims=True)
        lse = np.log(np.exp(logits).sum(axis=1))
        q = np.exp(logits - lse[:, None])
        value = np.mean(lse - (logits * onehot).sum(axis=1)) + l2 * (((s - beta) ** 2).sum() + (b ** 2).sum())
        g = (q - onehot) / n
        return value, np.concatenate([(g * z).sum(axis=0) + 2 * l2 * (s - beta), g.sum(axis=0) + 2 * l2 * b])

    w = minimize(loss, np.concatenate([np.full(k, beta), np.zeros(k)]), jac=True, method="L-BFGS-B").x
    return w[:k], w[k:]


def _choose_l2(z: np.ndarray, y: np.ndarray, beta: float, folds: int = 5, seed: int = 0) -> tuple[float, dict]:
    """The ridge strength of :data:`L2_GRID` with the lowest held-out NLL in stratified k-fold cross-validation."""
    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(y)
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts[counts > 0].min() >= folds
                else KFold(folds, shuffle=True, random_state=seed))
    cv = {}
    for l2 in L2_GRID:
        held = []
        for train, test in splitter.split(z, y):
            s, b = _fit_vector_l2(z[train], y[train], l2, beta)
            held.append(_nll_of_logits(z[test] * s + b, y[test]) * len(test))
        cv[l2] = sum(held) / len(y)
    return min(cv, key=cv.get), {str(k): round(v, 5) for k, v in cv.items()}


def fit(probs: np.ndarray, y: np.ndarray, labels: Sequence[str], method: str = "temperature") -> dict[str, Any]:
    """One mode's calibration parameters fitted on (probs, y), with ECE/NLL/Brier on these rows before and after."""
    if method not in METHODS:
        raise CalibrationError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    probs, y = _check(probs, y)
    if probs.shape[1] != len(labels):
        raise ValueError(f"{probs.shape[1]} probability columns for {len(labels)} labels")
    if len(y) < 2 * len(labels):
        raise CalibrationError(f"only {len(y)} labelled rows to fit a calibration on; give a validation split with "
                               f"at least {2 * len(labels)} (hundreds are better)")
    params: dict[str, Any] = {"temperature": round(fit_temperature(probs, y), 6)}
    if method == "vector":
        z, beta = _log_probs(probs), 1.0 / params["temperature"]
        l2, cv = _choose_l2(z, y, beta) if len(y) >= 50 else (L2_GRID[-1], {})
        s, b = _fit_vector_l2(z, y, l2, beta)
        params.update(scale={lab: round(float(v), 6) for lab, v in zip(labels, s)},
                      bias={lab: round(float(v), 6) for lab, v in zip(labels, b)}, l2=l2, cv_nll=cv)
    params["before"] = summary(probs, y)
    params["after"] = summary(transform(probs, params, labels), y)
    return params


def fit_modes(probs_by_tta: Mapping[str, np.ndarray], y: np.ndarray, labels: Sequence[str],
              method: str = "temperature") -> dict[str, Any]:
    """A card's ``calibration`` block without provenance: one fit per TTA mode (keys of ``probs_by_tta``)."""
    return {"method": method, "n": int(len(y)),
            "per_tta": {tta: fit(p, y, labels, method) for tta, p in probs_by_tta.items()}}


# ---- applying -------------------------------------------------------------------------------------------------


def transform(probs: np.ndarray, params: Mapping[str, Any], labels: Sequence[str] | None = None) -> np.ndarray:
    """Apply one mode's parameters: ``softmax(s * log p + b)`` (vector) or ``softmax(log p / T)`` (temperature).

    ``labels`` names the columns of ``probs``; vector parameters are looked up by those names (by the order they
    were stored in when None).
    """
    z = _log_probs(probs)
    if "scale" in params:
        names = list(labels) if labels is not None else list(params["scale"])
        if z.shape[1] != len(names):
            raise CalibrationError(f"the calibration covers {len(params['scale'])} labels, the probabilities have "
                                   f"{z.shape[1]} columns; rerun ferkit calibrate on this model")
        try:
            s = np.array([params["scale"][lab] for lab in names])
            b = np.array([params["bias"][lab] for lab in names])
        except KeyError as exc:
            raise CalibrationError(f"the calibration has no scale for label {exc}; rerun ferkit calibrate on this "
                                   f"model") from None
        return _softmax(z * s + b)
    return _softmax(z / params["temperature"])


@functools.lru_cache(maxsize=None)
def _warn_uncovered(tta: str, covered: tuple[str, ...]) -> None:
    log.warning("the model's calibration has no fit for tta=%s (only %s): its confidences are uncalibrated; rerun "
                "`ferkit calibrate` on it", tta, ", ".join(covered))


def apply(probs: np.ndarray, calibration: Mapping[str, Any] | None, tta: str = "none",
          labels: Sequence[str] | None = None) -> np.ndarray:
    """Calibrated probabilities (float32) for the output of a classifier run with test-time augmentation ``tta``.

    ``calibration`` is a card's ``calibration`` field; an empty or missing one returns ``probs`` unchanged, as does
    a TTA mode the calibration was not fitted for (with one warning: rerun ``ferkit calibrate``).
    """
    if not calibration or len(probs) == 0:
        return probs
    per_tta = calibration.get("per_tta", {})
    if tta not in per_tta:
        _warn_uncovered(tta, tuple(per_tta))
        return probs
    return transform(probs, per_tta[tta], labels).astype(np.float32)


def describe(calibration: Mapping[str, Any] | None, tta: str) -> str | None:
    """What calibration probabilities of mode ``tta`` get, for reports ('vector scaling fitted on <data> <split>'),
    or None when they are raw."""
    if not calibration or tta not in calibration.get("per_tta", {}):
        return None
    return f"{calibration['method']} scaling fitted on {calibration.get('fitted_on', '?')}"


def validate(calibration: Any, labels: Sequence[str]) -> None:
    """Raise CalibrationError (one line) unless ``calibration`` is empty or a usable calibration for ``labels``.

    Vector parameters must cover every label; extra ones are ignored (looked up by name), so a card whose labels
    disagree with its graph fails on that, the real cause, when the graph loads.
    """
    if not calibration:
        return
    if not isinstance(calibration, dict) or not isinstance(calibration.get("per_tta"), dict):
        raise CalibrationError("calibration must be an object with per_tta fits; rerun ferkit calibrate")
    if calibration.get("method") not in METHODS:
        raise CalibrationError(f"calibration method must be one of {', '.join(METHODS)}, not "
                               f"{calibration.get('method')!r}")
    for tta, params in calibration["per_tta"].items():
        t = params.get("temperature") if isinstance(params, dict) else None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise CalibrationError(f"calibration for tta={tta}: temperature must be a number > 0, not {t!r}")
        if calibration["method"] == "vector":
            for key in ("scale", "bias"):
                values = params.get(key)
                if not isinstance(values, dict) or not set(labels) <= set(values) or not all(
                        isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()):
                    raise CalibrationError(f"calibration for tta={tta}: {key} must give a number for each label "
                                           f"({', '.join(labels)}); rerun ferkit calibrate")


# ---- the reliability diagram ----------------------------------------------------------------------------------


def save_reliability_diagram(report: Mapping[str, Any], out_dir: str | os.PathLike, title: str = "") -> Path:
    """``reliability.png`` from a report holding ``reliability`` bins (and ``ece``): accuracy per confidence bin
    against the diagonal, with the share of rows per bin below. Drawn on a bare ``Figure`` like the confusion plots.
    """
    from matplotlib.figure import Figure

    from ferkit.io import atomic_write

    r = report["reliability"]
    lower, upper, count = np.array(r["lower"]), np.array(r["upper"]), np.array(r["count"])
    width = upper - lower
    acc = np.array([np.nan if a is None else a for a in r["accuracy"]])
    conf = np.array([np.nan if c is None else c for c in r["confidence"]])
    fig = Figure(figsize=(5, 6), dpi=120)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lower, np.nan_to_num(acc), width=width, align="edge", color="#4c78a8", edgecolor="white",
            label="accuracy")
    top.bar(lower, np.nan_to_num(conf - acc), bottom=np.nan_to_num(acc), width=width, align="edge",
            color="#e45756", alpha=0.35, edgecolor="#e45756", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    stats = f"ECE {report['ece']:.3f}" + (f", NLL {report['nll']:.3f}" if "nll" in report else "")
    where = ", ".join(x for x in (title, report.get("split") and f"{report['split']} (n={report.get('n')})",
                                  report.get("tta") and f"tta {report['tta']}") if x)
    top.set_title(((where + ": ") if where else "") + stats, fontsize=10)
    bottom.bar(lower, count / max(count.sum(), 1), width=width, align="edge", color="#888888", edgecolor="white")
    bottom.set_xlabel(f"top-1 confidence ({len(count)} bins)")
    bottom.set_ylabel("share of faces")
    fig.tight_layout()
    path = Path(out_dir) / "reliability.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return path
