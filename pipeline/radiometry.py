"""Radiometric normalisation: map AFTER's values onto BEFORE's scale over valid pixels.

Sun, haze and sensor change every value of a scene; real change touches few pixels. A linear map
fitted between the two images' quantiles (robust to the few changed pixels) removes the former.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Radiometry:
    """Per-band linear map ``after' = gain * after + offset``, in BEFORE's units.

    ``mode`` is ``per-band`` when both images have the same number of bands, otherwise
    ``luminance``: both are reduced to the mean of their bands before comparison.
    """

    method: str
    mode: str
    gains: tuple[float, ...]
    offsets: tuple[float, ...]

    def as_dict(self) -> dict:
        return {"method": self.method, "mode": self.mode,
                "gains": [round(g, 5) for g in self.gains],
                "offsets": [round(o, 4) for o in self.offsets]}


def comparable(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bring (B, M, N) and (B', M, N) to the same band count (luminance when B != B')."""
    if before.shape[0] == after.shape[0]:
        return before, after
    return (before.mean(axis=0, keepdims=True, dtype=np.float32),
            after.mean(axis=0, keepdims=True, dtype=np.float32))


def fit_linear(before: np.ndarray, after: np.ndarray, valid: np.ndarray, *,
               quantiles: tuple[float, float] = (0.02, 0.98), method: str = "linear-quantile"
               ) -> Radiometry:
    """Fit a per-band linear map from AFTER to BEFORE on pixels valid in both.

    Parameters
    ----------
    before, after : (B, M, N) ndarray
        Co-registered samples of both images with the same band count (see :func:`comparable`).
    valid : (M, N) bool ndarray
    quantiles : (low, high)
        Range of quantiles matched; 50 quantiles in it are paired and a line fitted through them.

    Notes
    -----
    Quantile (histogram) matching restricted to a linear map: as robust as histogram matching
    to changed pixels, yet unable to invent contrast. ``method='none'`` gives the identity.
    """
    n = before.shape[0]
    if method == "none" or valid.sum() < 100:
        return Radiometry("none", "per-band", (1.0,) * n, (0.0,) * n)
    qs = np.linspace(quantiles[0], quantiles[1], 50)
    gains, offsets = [], []
    for b in range(n):
        qb = fast_quantiles(before[b][valid], qs)
        qa = fast_quantiles(after[b][valid], qs)
        if np.ptp(qa) < 1e-9:
            gains.append(1.0)
            offsets.append(float(np.median(qb) - np.median(qa)))
            continue
        gain, offset = np.polyfit(qa, qb, 1)
        gains.append(float(gain))
        offsets.append(float(offset))
    return Radiometry(method, "per-band", tuple(gains), tuple(offsets))


def fast_quantiles(values: np.ndarray, qs, *, bins: int = 1 << 16) -> np.ndarray:
    """``np.quantile(values, qs)`` (linear interpolation), the same values, faster on millions.

    The values are counted into ``bins`` equal bins first (a monotonic map, so the bins keep
    their order); only the bins that hold the ranks asked for are then sorted. Two to four
    times faster than numpy's partition on the few million pixels of the matching windows.
    """
    v = np.asarray(values).ravel()
    qs = np.asarray(qs, dtype=np.float64)
    if v.size < 4 * bins or v.dtype.kind != "f":
        return np.quantile(v, qs)
    lo, hi = float(v.min()), float(v.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
        return np.quantile(v, qs)
    n = v.size
    pos = qs * (n - 1)
    below, above = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
    which = ((v - v.dtype.type(lo)) * v.dtype.type((bins - 1) / (hi - lo))).astype(np.int32)
    np.clip(which, 0, bins - 1, out=which)
    counts = np.bincount(which, minlength=bins)
    ends = np.cumsum(counts)
    need = np.unique(np.searchsorted(ends, np.concatenate([below, above]), side="right"))
    wanted = np.zeros(bins, bool)
    wanted[need] = True
    chosen = np.sort(v[wanted[which]])  # the needed bins' values, bin after bin, in order
    first = np.cumsum(counts[need]) - counts[need]  # where each needed bin starts in chosen

    def value(rank: np.ndarray) -> np.ndarray:
        k = np.searchsorted(need, np.searchsorted(ends, rank, side="right"))
        return chosen[first[k] + rank - (ends[need[k]] - counts[need[k]])]

    a, b = value(below), value(above)
    t = pos - below
    # numpy's linear interpolation, term for term
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def normalise(after: np.ndarray, radiometry: Radiometry) -> np.ndarray:
    """Apply a fitted :class:`Radiometry` to AFTER (B, M, N) float32; returns a new array."""
    gains = np.asarray(radiometry.gains, dtype=np.float32)[:, None, None]
    offsets = np.asarray(radiometry.offsets, dtype=np.float32)[:, None, None]
    out = after * gains
    out += offsets  # in place: the same values as ``after * gains + offsets``, one array less
    return out
