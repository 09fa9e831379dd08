"""Radiometric normalisation: map AFTER's values onto BEFORE's scale over valid pixels.

Sun, haze and sensor change every value of a scene; real change touches few pixels. A linear map
fitted between the two images' quantiles (robust to the few changed pixels) removes the former.
Haze, thin cloud and the seasons do not change a large scene evenly: what the linear map leaves
is a level that drifts over hundreds of metres, removed by a smooth field of local medians
(:func:`fit_level`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Radiometry:
    """Per-band linear map ``after' = gain * after + offset``, in BEFORE's units.

    ``mode`` is ``per-band`` when both images have the same number of bands, otherwise
    ``luminance``: both are reduced to the mean of their bands before comparison. ``level``,
    when given, is then subtracted: the local level AFTER keeps after the linear map.
    """

    method: str
    mode: str
    gains: tuple[float, ...]
    offsets: tuple[float, ...]
    level: LevelField | None = None

    def as_dict(self) -> dict:
        out = {"method": self.method, "mode": self.mode,
               "gains": [round(g, 5) for g in self.gains],
               "offsets": [round(o, 4) for o in self.offsets]}
        if self.level is not None:
            out["level"] = self.level.as_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Radiometry:
        """The :class:`Radiometry` that ``report.json``'s ``radiometry`` records."""
        level = d.get("level")
        return cls(d.get("method", ""), d.get("mode", ""), tuple(d["gains"]), tuple(d["offsets"]),
                   LevelField.from_dict(level) if level else None)


@dataclass(frozen=True, eq=False)
class LevelField:
    """A smooth field of AFTER's residual level per band (BEFORE's units), on a lattice of nodes.

    Nodes lie at ``cols_px`` x ``rows_px`` (BEFORE pixel edges: pixel ``x`` has its centre at
    ``x + 0.5``); ``levels`` (B, ny, nx) holds each node's level. Between nodes the field is
    bilinear, beyond the outer nodes constant. A pixel's value depends on its position alone, so
    any window gives the same values as the whole scene.
    """

    cols_px: np.ndarray
    rows_px: np.ndarray
    levels: np.ndarray

    def at(self, window) -> np.ndarray:
        """(B, h, w) float32: the field over ``window`` (a rasterio Window on the BEFORE grid)."""
        (iy, jy, ty), (ix, jx, tx) = (
            _bilinear(nodes, np.arange(off, off + n, dtype=np.float64) + 0.5)
            for nodes, off, n in ((self.rows_px, int(window.row_off), int(window.height)),
                                  (self.cols_px, int(window.col_off), int(window.width))))
        r0, r1 = int(iy.min()), int(jy.max()) + 1  # only the rows of nodes the window needs
        lv = self.levels[:, r0:r1].astype(np.float32, copy=False)
        cols = lv[:, :, ix] * (1 - tx) + lv[:, :, jx] * tx  # (B, r1 - r0, w)
        out = np.empty((cols.shape[0], ty.size, cols.shape[2]), np.float32)
        if r1 - r0 == 1:
            out[:] = cols[:, :1]
            return out
        step = cols[:, 1:] - cols[:, :-1]
        # the rows between two rows of nodes at a time: lower + t * (upper - lower)
        ends = np.flatnonzero(np.diff(iy)) + 1
        for a, b in zip(np.r_[0, ends], np.r_[ends, iy.size]):
            j = int(iy[a]) - r0
            np.multiply(step[:, j, None, :], ty[a:b, None], out=out[:, a:b])
            out[:, a:b] += cols[:, j, None, :]
        return out

    def as_dict(self) -> dict:
        lv = self.levels
        return {"node_cols_px": [round(float(c), 2) for c in self.cols_px],
                "node_rows_px": [round(float(r), 2) for r in self.rows_px],
                "min": [round(float(v), 3) for v in lv.min(axis=(1, 2))],
                "max": [round(float(v), 3) for v in lv.max(axis=(1, 2))],
                "std": [round(float(v), 3) for v in lv.std(axis=(1, 2))],
                "levels": [[[float(f"{v:.4g}") for v in row] for row in band] for band in lv]}

    @classmethod
    def from_dict(cls, d: dict) -> LevelField:
        return cls(np.asarray(d["node_cols_px"], np.float64), np.asarray(d["node_rows_px"], np.float64),
                   np.asarray(d["levels"], np.float32))


def _bilinear(nodes: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``at``: the nodes below and above it, and the weight (float32) of the one
    above."""
    if nodes.size == 1:
        zero = np.zeros(at.size, np.intp)
        return zero, zero, np.zeros(at.size, np.float32)
    f = np.interp(at, nodes, np.arange(nodes.size, dtype=np.float64))
    i = np.minimum(f.astype(np.intp), nodes.size - 2)
    return i, i + 1, (f - i).astype(np.float32)


def fit_level(before: np.ndarray, after: np.ndarray, valid: np.ndarray, *, cell: int,
              factor: tuple[float, float], min_share: float = 0.125) -> LevelField:
    """The local level of AFTER over BEFORE: a :class:`LevelField` from coarse samples.

    Parameters
    ----------
    before, after : (B, m, n) ndarray
        Both images on a coarse grid (e.g. averaged), AFTER already through the linear map.
    valid : (m, n) bool ndarray
    cell : int
        Node spacing, in coarse pixels. Nodes lie on the corners of ``cell`` x ``cell`` cells,
        from the scene's top-left corner to beyond its bottom-right one.
    factor : (fy, fx)
        BEFORE pixels per coarse pixel, down and across.
    min_share : float
        A node whose 2 x 2 cells hold fewer valid samples than this share of them takes the
        level of its nearest node that has enough.

    Notes
    -----
    Each node's level is the median of ``after - before`` over the 2 x 2 cells around it: an
    object that changed covers less than half of them when a cell is wider than the object, so
    the median is the ground's. Neighbouring nodes share half their samples, which smooths the
    field. With no node measured the field is zero.
    """
    bands, m, n = before.shape
    ny, nx = math.ceil(m / cell) + 1, math.ceil(n / cell) + 1
    # one cell of NaN on every side: node (j, i)'s window is padded cells j, j+1 x i, i+1
    pad = np.full((bands, (ny + 1) * cell, (nx + 1) * cell), np.nan, np.float32)
    inner = pad[:, cell:cell + m, cell:cell + n]
    np.subtract(after, before, out=inner, casting="unsafe")
    inner[:, ~valid] = np.nan
    cells = pad.reshape(bands, ny + 1, cell, nx + 1, cell).transpose(1, 3, 0, 2, 4)
    levels = np.full((bands, ny, nx), np.nan, np.float32)
    for j in range(ny):  # a row of nodes at a time: bounded memory on large scenes
        rows = cells[j:j + 2]  # (2, nx + 1, B, cell, cell)
        win = np.concatenate([rows[0, :-1], rows[0, 1:], rows[1, :-1], rows[1, 1:]], axis=-1)
        win = win.reshape(nx, bands, -1)
        count = np.isfinite(win[:, 0]).sum(axis=1)
        ok = count >= min_share * win.shape[-1]
        full = count == win.shape[-1]  # no NaN: numpy's median is many times faster
        if full.any():
            levels[:, j, full] = np.median(win[full], axis=-1).T
        part = ok & ~full
        if part.any():
            levels[:, j, part] = np.nanmedian(win[part], axis=-1).T
    measured = np.isfinite(levels[0])
    if not measured.any():
        levels[:] = 0.0
    elif not measured.all():  # each unmeasured node takes its nearest measured one's level
        _, (ri, ci) = ndimage.distance_transform_edt(~measured, return_indices=True)
        levels = levels[:, ri, ci]
    fy, fx = factor
    return LevelField(np.arange(nx, dtype=np.float64) * cell * fx,
                      np.arange(ny, dtype=np.float64) * cell * fy, levels)


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
    return fit_linear_values([x[valid] for x in before], [x[valid] for x in after],
                             quantiles=quantiles, method=method)


def fit_linear_values(before: list[np.ndarray], after: list[np.ndarray], *,
                      quantiles: tuple[float, float] = (0.02, 0.98),
                      method: str = "linear-quantile") -> Radiometry:
    """:func:`fit_linear` from each band's valid values, paired (1-D arrays, in any order but
    the same in both images)."""
    n = len(before)
    if method == "none" or (before[0].size if n else 0) < 100:
        return Radiometry("none", "per-band", (1.0,) * n, (0.0,) * n)
    qs = np.linspace(quantiles[0], quantiles[1], 50)
    gains, offsets = [], []
    for b in range(n):
        qb = fast_quantiles(before[b], qs)
        qa = fast_quantiles(after[b], qs)
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


def normalise(after: np.ndarray, radiometry: Radiometry, window=None) -> np.ndarray:
    """Apply a fitted :class:`Radiometry` to AFTER (B, M, N) float32; returns a new array.

    ``window`` (a rasterio Window on the BEFORE grid) says where AFTER lies: needed when the
    radiometry has a level field.
    """
    gains = np.asarray(radiometry.gains, dtype=np.float32)[:, None, None]
    offsets = np.asarray(radiometry.offsets, dtype=np.float32)[:, None, None]
    out = after * gains
    out += offsets  # in place: the same values as ``after * gains + offsets``, one array less
    if radiometry.level is not None:
        if window is None:
            raise ValueError("a radiometry with a level field needs the window it applies to")
        out -= radiometry.level.at(window)
    return out
