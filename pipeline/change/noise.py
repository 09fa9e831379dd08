"""The noise model of a pair: how AFTER's radiometry maps onto BEFORE's, and the unit in which
a difference counts as change (:func:`fit_noise_model` -> :class:`NoiseModel`).

The radiometric map is a linear quantile match over the matching windows, plus a smooth field
of local levels fitted on both scenes averaged over coarse cells (:func:`coarse_pair`). The
unit is the robust standard deviation of the smoothed difference that map leaves, raised to a
visible contrast; optionally a local unit (:class:`~pipeline.change.difference.LocalNoise`)
and the structure score's unit.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from rasterio.windows import Window

from .. import io as rio
from ..config import Config
from ..io.readers import ReaderPool, stripes
from ..io.scene import Scene
from .difference import (
    LocalNoise,
    gradient_magnitude,
    local_radius_px,
    noise_sample_step,
    robust_sigma,
    smooth,
)
from .radiometry import (
    Radiometry,
    comparable,
    fast_quantiles,
    fit_level,
    fit_linear_values,
    normalise,
)

LEVEL_SAMPLES = 10  # coarse pixels per side of a cell of the level field (radiometry.level_m)


@dataclass(frozen=True)
class NoiseModel:
    """What makes a difference between BEFORE and AFTER count as change.

    Attributes
    ----------
    radiometry : Radiometry
        AFTER's map onto BEFORE's radiometry (linear, plus the local level field).
    unit : ndarray of float32, shape (B,)
        Each compared band's unit of the change score: its noise, at least the visible floor.
    local : LocalNoise or None
        The local noise unit's parts (``difference.local_noise_m``), else None.
    structure_unit : float or None
        The structure score's unit (``difference.structure_unit``), else None.
    """

    radiometry: Radiometry
    unit: np.ndarray
    local: LocalNoise | None = None
    structure_unit: float | None = None

    def report(self) -> dict:
        """report.json's ``radiometry``."""
        return {**self.radiometry.as_dict(),
                "score_unit": [round(float(s), 4) for s in self.unit],
                "structure_unit": None if self.structure_unit is None
                else round(self.structure_unit, 4)}


@dataclass(frozen=True)
class CoarsePair:
    """Both scenes averaged over ``factor`` x ``factor`` cells of the BEFORE grid: before, after
    (B, m, n) float32, and valid (m, n) bool, a cell valid where at least half its pixels are
    in both."""

    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    factor: int


def level_factor(scene: Scene, config: Config) -> int:
    """BEFORE pixels a side of the cells the level field is fitted on."""
    grid = scene.grid
    return max(1, min(int(config.radiometry.level_m / scene.res_m // LEVEL_SAMPLES),
                      min(grid.width, grid.height) // 8))


def coarse_pair(pool: ReaderPool, scene: Scene, factor: int, *, block_px: int,
                stripe_px: int) -> CoarsePair:
    """Both scenes averaged over ``factor`` x ``factor`` cells, read block by block on the
    pool's workers (readers: BEFORE, AFTER on the grid)."""
    grid, nodata = scene.grid, scene.nodata
    b_bands, a_bands = scene.b_bands, scene.a_bands
    h, w = grid.height // factor, grid.width // factor
    step = max(1, block_px // factor) * factor
    blocks = [(win, win) for r in range(0, h * factor, step) for c in range(0, w * factor, step)
              for win in [Window(c, r, min(step, w * factor - c), min(step, h * factor - r))]]
    out = [np.zeros((len(bands), h, w), np.float32) for bands in (b_bands, a_bands)]
    valid = np.ones((h, w), bool)

    def job(item, readers):
        win = item[0]
        return (rio.coarse_cells(*rio.read_window(readers[0], win, bands=b_bands, nodata=nodata),
                                 factor),
                rio.coarse_cells(*readers[1].read_rounded(win, bands=a_bands), factor))

    for win, cells in pool.map(job, stripes(blocks, stripe_px)):
        at = (slice(int(win.row_off) // factor, int(win.row_off + win.height) // factor),
              slice(int(win.col_off) // factor, int(win.col_off + win.width) // factor))
        for k, (means, share) in enumerate(cells):
            out[k][(slice(None),) + at] = means
            valid[at] &= share >= 0.5
    return CoarsePair(out[0], out[1], valid, factor)


def _fit_level(coarse: CoarsePair, rad: Radiometry, res_m: float, config: Config):
    """The :class:`~pipeline.change.radiometry.LevelField` of AFTER after ``rad``'s linear map
    (AFTER's cells are overwritten)."""
    b, a = comparable(coarse.before, coarse.after)
    factor = coarse.factor
    # the linear map in place: on a 30000 px scene each of these arrays is 170 MB
    a *= np.asarray(rad.gains, np.float32)[:, None, None]
    a += np.asarray(rad.offsets, np.float32)[:, None, None]
    cell = max(1, round(config.radiometry.level_m / res_m / factor))
    return fit_level(b, a, coarse.valid, cell=cell, factor=(factor, factor))


def _window_pairs(scene: Scene, a_vrt, windows: list[Window]) -> list[tuple]:
    """(before, after, valid) of the compared bands in each window, made comparable."""
    pairs = []
    for w in windows:
        b, vb, a, va = scene.read((scene.b_ds, a_vrt), w)
        pairs.append((*comparable(b, a), vb & va))
    return pairs


def _valid_values(pairs: list[tuple]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each band's values at the pixels valid in both, window after window: before's, after's
    (gathered once: on a first run the memory they take is much of the fit's time)."""
    n = pairs[0][0].shape[0]
    before = [np.concatenate([b[k][v] for b, _, v in pairs]) for k in range(n)]
    after = [np.concatenate([a[k][v] for _, a, v in pairs]) for k in range(n)]
    return before, after


@dataclass(frozen=True)
class _Differences:
    """The smoothed differences the map leaves in the windows, per band: all valid pixels,
    those on the local unit's sample lattice, and the gradient magnitudes' differences."""

    pooled: list[np.ndarray]
    sampled: list[list[np.ndarray]]
    gradient: list[np.ndarray]


def _differences(windows: list[Window], pairs: list[tuple], rad: Radiometry, res_m: float,
                 config: Config) -> _Differences:
    """Window by window: smoothing must not cross the seams between windows."""
    d = config.difference
    n_bands = pairs[0][0].shape[0]
    diffs = [[] for _ in range(n_bands)]
    sampled = [[] for _ in range(n_bands)]  # on the local noise unit's sample lattice
    gradient_diffs = []
    step = noise_sample_step(local_radius_px(d, res_m))
    for w, (b, a, v) in zip(windows, pairs):
        pick = (slice(-int(w.row_off) % step, None, step), slice(-int(w.col_off) % step, None, step))
        # both smoothed once, for the difference's noise and the gradient's
        sb = [smooth(x, d.smoothing_px) for x in b]
        sa = [smooth(x, d.smoothing_px) for x in normalise(a, rad, w)]
        for k in range(len(sb)):
            diff = sa[k] - sb[k]  # smoothed_difference's
            diffs[k].append(diff[v])
            if d.local_noise_m > 0:
                sampled[k].append(diff[pick][v[pick]])
        if d.structure_unit > 0:
            gradient_diffs.append((gradient_magnitude(sa) - gradient_magnitude(sb))[v])
    pooled = [np.concatenate(parts) if parts else np.zeros(0, np.float32) for parts in diffs]
    return _Differences(pooled, sampled, gradient_diffs)


def _contrast_floor(values: list[np.ndarray], config: Config) -> list[float]:
    """Each band's least unit, from BEFORE's valid values in each band: a seed must also be a
    visible contrast, not only a significant one (on very clean images the noise alone would
    let faint roof glints and haze through)."""
    d = config.difference
    floor = []
    for v in values:
        lo, hi = fast_quantiles(v, (0.02, 0.98)) if v.size else (0.0, 0.0)
        floor.append(d.min_contrast * float(hi - lo) / d.threshold_sigma)
    return floor


def _local_noise(sampled: list[list[np.ndarray]], sigma: list[float], floor: list[float],
                 res_m: float, config: Config) -> LocalNoise:
    """The local unit's parts, from the same samples as the local level's, so that a sensor's
    pattern (pan-sharpening, JPEG blocks) biases both alike."""
    d = config.difference
    e2 = sum((np.concatenate(p) / np.float32(s)) ** 2
             for p, s in zip(sampled, sigma)) / np.float32(len(sigma))
    ref = math.sqrt(float(fast_quantiles(e2, [d.local_noise_quantile])[0])) if e2.size else 1.0
    return LocalNoise(tuple(float(s) for s in sigma), tuple(floor), max(ref, 1e-6),
                      local_radius_px(d, res_m), d.local_noise_quantile,
                      tuple(d.local_noise_limits))


def fit_noise_model(scene: Scene, a_vrt, windows: list[Window], config: Config, *,
                    coarse: CoarsePair | Callable[[], CoarsePair] | None = None) -> NoiseModel:
    """Radiometric map and the score's units, from the matching windows.

    Parameters
    ----------
    scene : Scene
    a_vrt : AfterOnGrid
        AFTER on the BEFORE grid, registered.
    windows : list of Window
        Where to fit (the matching windows); the whole grid when empty.
    config : Config
    coarse : CoarsePair or callable returning one, optional
        Both scenes averaged over coarse cells: adds the local level field
        (``radiometry.level_m``) to the map; the unit is then measured on what it leaves. A
        callable is called once the linear map is fitted (the cells may be read meanwhile).

    Notes
    -----
    The unit is the robust standard deviation of the smoothed difference (noise), raised where
    needed so that ``threshold_sigma`` units are at least ``min_contrast`` of BEFORE's range.
    The structure unit is ``difference.structure_unit`` robust standard deviations of the
    difference of the gradient magnitudes.
    """
    res_m = scene.res_m
    windows = windows or [Window(0, 0, scene.b_ds.width, scene.b_ds.height)]
    pairs = _window_pairs(scene, a_vrt, windows)
    b_values, a_values = _valid_values(pairs)
    rad = fit_linear_values(b_values, a_values, quantiles=config.radiometry.quantiles,
                            method=config.radiometry.method)
    del a_values
    if coarse is not None and rad.method != "none":
        cells = coarse() if callable(coarse) else coarse
        rad = replace(rad, level=_fit_level(cells, rad, res_m, config))
        del cells
    d = config.difference
    diffs = _differences(windows, pairs, rad, res_m, config)
    sigma = [max(robust_sigma(p) if p.size else 1.4826, 1e-6) for p in diffs.pooled]
    floor = _contrast_floor(b_values, config)
    local = _local_noise(diffs.sampled, sigma, floor, res_m, config) if d.local_noise_m > 0 else None
    unit = np.maximum(np.asarray(sigma, np.float32), np.asarray(floor, np.float32))
    structure = None
    if d.structure_unit > 0:
        pooled = np.concatenate(diffs.gradient) if diffs.gradient else np.zeros(0, np.float32)
        structure = d.structure_unit * max(robust_sigma(pooled) if pooled.size else 1.0, 1e-3)
    return NoiseModel(rad, unit, local, structure)
