"""Per-person smoothing of emotion scores over time: an exponential moving average whose time constant is seconds.

A per-frame classifier flickers between neighbouring labels; people's expressions change over fractions of a
second. The EMA's weight for a new frame is ``1 - exp(-dt / tau)``, with ``dt`` the seconds since that person's
last frame, so the same ``tau`` means the same smoothing at any frame rate or ``--stride``, and a person back after
a long absence starts afresh instead of carrying stale scores. ``tau = 0`` turns smoothing off.
"""

from __future__ import annotations

import math

import numpy as np


class EmaSmoother:
    """EMA of score vectors per key (person id); ``tau`` seconds."""

    def __init__(self, tau: float = 0.5) -> None:
        if tau < 0:
            raise ValueError(f"the smoothing time constant must be >= 0 seconds, not {tau}")
        self.tau = tau
        self._state: dict[int, tuple[float, np.ndarray]] = {}

    def update(self, key: int, time_s: float, scores: np.ndarray) -> np.ndarray:
        """Smoothed scores of ``key`` at ``time_s`` after seeing ``scores`` (a probability vector)."""
        prev = self._state.get(key)
        if prev is None or self.tau == 0:
            value = scores.astype(np.float64)
        else:
            last_t, last = prev
            alpha = 1.0 - math.exp(-max(time_s - last_t, 0.0) / self.tau)
            value = last + alpha * (scores - last)
        self._state[key] = (time_s, value)
        return value
