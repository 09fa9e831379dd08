"""Differencing: a per-pixel change score in noise units and the cleaned change mask.

The unit is the scene's noise or, with a :class:`LocalNoise`, the noise of each pixel's
neighbourhood: clean concrete gets a lower threshold than fields whose season changed.

The score tolerates a residual misregistration of ``tolerance_px``: a pixel only counts as changed
when its value lies outside the range of the other image's neighbourhood, in both directions.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..config import DifferenceConfig
from ..coreg.shift import gradient_magnitude as _image_gradient


def _disk(radius_px: float) -> np.ndarray | None:
    r = int(round(radius_px))
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def smooth(band: np.ndarray, sigma_px: float) -> np.ndarray:
    """``band`` smoothed by a Gaussian of ``sigma_px`` (itself when 0), as every score sees it."""
    if sigma_px <= 0:
        return band
    return cv2.GaussianBlur(band, (0, 0), sigma_px)


def gradient_magnitude(bands: list[np.ndarray]) -> np.ndarray:
    """Gradient magnitude (3 x 3 Sobel) of the mean of ``bands``, (M, N) float32."""
    mean = bands[0].copy()
    for band in bands[1:]:
        mean += band
    mean /= np.float32(len(bands))
    return _image_gradient(mean, sigma_px=0)


def structure_score(sb: list[np.ndarray], sa: list[np.ndarray], unit: float,
                    tolerance_px: int = 1) -> np.ndarray:
    """How far an outline of one image is missing from the other, in ``unit``, (M, N) float32.

    The gradient magnitudes of both (smoothed) images are compared as the change score compares
    levels: how far one exceeds the other's maximum over the ``tolerance_px`` neighbourhood, the
    larger way round. A change of level over a whole surface (season, haze, a sensor's
    response) leaves it near zero; an object that came or went leaves its outline.
    ``unit`` is ``difference.structure_unit`` times the scene's robust sigma of the gradient
    difference (:func:`pipeline.run._fit_radiometry`).
    """
    gb, ga = gradient_magnitude(sb), gradient_magnitude(sa)
    kernel = _disk(tolerance_px) if tolerance_px > 0 else None
    if kernel is None:
        d = cv2.absdiff(gb, ga)
    else:
        d = np.maximum(gb - cv2.dilate(ga, kernel), ga - cv2.dilate(gb, kernel))
        np.maximum(d, 0, out=d)
    d /= np.float32(unit)
    return d


def _outside(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How far ``x`` lies outside [``lo``, ``hi``] (0 inside)."""
    return np.maximum(np.maximum(x - hi, lo - x), 0)


def _interval_distance(x: np.ndarray, ref: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    """How far ``x`` lies outside the range of ``ref`` over the kernel's neighbourhood."""
    if kernel is None:
        return np.abs(x - ref)
    return _outside(x, cv2.erode(ref, kernel), cv2.dilate(ref, kernel))


def robust_sigma(values: np.ndarray) -> float:
    """Robust standard deviation: 1.4826 times the median absolute deviation (0 if empty)."""
    if values.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def smoothed_difference(b: np.ndarray, a: np.ndarray, sigma_px: float) -> list[np.ndarray]:
    """AFTER minus BEFORE per band, both smoothed first (the difference the score's unit is
    the noise of)."""
    return [smooth(a[k], sigma_px) - smooth(b[k], sigma_px) for k in range(b.shape[0])]


LOCAL_NOISE_M = 20.0  # ground around a blob whose noise it is judged against


def local_noise_gain(b: np.ndarray, a: np.ndarray, ground: np.ndarray, sigma: np.ndarray,
                     smoothing_px: float, *, limits: tuple[float, float] = (0.5, 3.0)) -> float:
    """How much quieter the unchanged ground around a blob is than the scene: the ratio of the
    score's unit (the scene's noise) to the noise of the ground nearby, median over bands.

    A white aircraft on clean concrete stands out from its apron even when a change of season
    in the fields made the scene's noise large; a patch of soil in a noisy field does not.
    Clamped to ``limits``; 1 when there is too little ground to judge.
    """
    if int(ground.sum()) < 200:
        return 1.0
    ratios = [float(sigma[k]) / max(robust_sigma(diff[ground]), 1e-6)
              for k, diff in enumerate(smoothed_difference(b, a, smoothing_px))]
    return float(np.clip(np.median(ratios), *limits))


@dataclass(frozen=True)
class LocalNoise:
    """What a pixel's local noise unit is made of (:func:`local_units`).

    ``noise`` is each band's robust sigma of the smoothed difference over the scene (unfloored),
    ``floor`` each band's least unit (``min_contrast``), ``ref`` the ``quantile`` of the noise
    level (:func:`noise_level`) over the scene; ``radius_px`` the half side of the square
    neighbourhood; the local unit stays within ``limits`` times the scene's.
    """

    noise: tuple[float, ...]
    floor: tuple[float, ...]
    ref: float
    radius_px: int
    quantile: float
    limits: tuple[float, float]


def noise_level(sb: list[np.ndarray], sa: list[np.ndarray], noise) -> np.ndarray:
    """Squared noise level of each pixel: the mean over bands of (smoothed difference / the
    band's noise sigma) squared, (M, N) float32."""
    acc = np.zeros(sb[0].shape, np.float32)
    d = np.empty_like(acc)
    for k in range(len(sb)):
        np.subtract(sa[k], sb[k], out=d)
        np.divide(d, np.float32(noise[k]), out=d)
        acc += np.square(d, out=d)
    acc /= np.float32(len(sb))
    return acc


CELLS_PER_RADIUS = 10  # the neighbourhood's half side, in cells of the lattice the gain is counted on
NOISE_SAMPLE_STEP = 2  # the noise is sampled on every second pixel of every second row


def noise_cells(radius_px: int) -> tuple[int, int]:
    """The lattice of :func:`local_gain_map` for a neighbourhood of half side ``radius_px``:
    the side of a cell and the neighbourhood's half side in cells (about ``radius_px`` in all)."""
    cell = max(1, round(radius_px / CELLS_PER_RADIUS))
    return cell, max(1, round(radius_px / cell))


def noise_sample_step(radius_px: int) -> int:
    """The local noise level is sampled where the scene's row and column are both multiples of
    this (``NOISE_SAMPLE_STEP`` when it divides the cell side, else 1: every pixel)."""
    cell = noise_cells(radius_px)[0] if radius_px > 0 else 1
    return NOISE_SAMPLE_STEP if cell % NOISE_SAMPLE_STEP == 0 else 1


def local_reach_px(radius_px: int) -> int:
    """How far (pixels) a pixel's local gain depends on the noise levels around it: the far
    side of the farthest cell of its neighbourhood."""
    cell, half = noise_cells(radius_px)
    return (half + 1) * cell - 1


def _box_sum_cells(a: np.ndarray, half: int) -> np.ndarray:
    """Sums of each (ny, nx) plane of ``a`` over the (2 half + 1)^2 cells around each cell,
    zero outside, (K, ny, nx) float64 (exact: the counts stay far below 2^53)."""
    size = (2 * half + 1, 2 * half + 1)
    return np.stack([cv2.boxFilter(plane.astype(np.float64), -1, size, normalize=False,
                                   borderType=cv2.BORDER_CONSTANT) for plane in a])


@dataclass(frozen=True)
class _CellGain:
    """A gain per cell of the lattice, and where an array's pixels fall on it."""

    gain: np.ndarray  # (ny, nx) float32
    cell: int
    offset: tuple[int, int]  # the array's first pixel within its cell (row, col)
    shape: tuple[int, int]  # the array's

    def expand(self, values: np.ndarray) -> np.ndarray:
        """A (ny, nx) array of the cells' values as an array of the pixels', (M, N)."""
        (oy, ox), (m, n) = self.offset, self.shape
        grown = np.repeat(np.repeat(values, self.cell, axis=0), self.cell, axis=1)
        return grown[oy:oy + m, ox:ox + n]

    def window(self, rows: slice, cols: slice) -> _CellGain:
        """The gain of the pixels of a window (two slices with starts) of the array."""
        (oy, ox), cell = self.offset, self.cell
        y, x = oy + rows.start, ox + cols.start
        m, n = rows.stop - rows.start, cols.stop - cols.start
        gain = self.gain[y // cell:-(-(y + m) // cell), x // cell:-(-(x + n) // cell)]
        return _CellGain(gain, cell, (y % cell, x % cell), (m, n))

    def at(self, flat: np.ndarray) -> np.ndarray:
        """The gain at the pixels of flat indexes ``flat``."""
        rows, cols = np.divmod(flat, self.shape[1])
        return self.gain[(rows + self.offset[0]) // self.cell, (cols + self.offset[1]) // self.cell]


def local_gain_map(sb: list[np.ndarray], sa: list[np.ndarray], valid: np.ndarray,
                   ln: LocalNoise, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """How much noisier each pixel's neighbourhood is than the scene, (M, N) float32.

    The neighbourhood is a square of cells of a lattice anchored on the scene's pixel (0, 0)
    (:func:`noise_cells`: about ``ln.radius_px`` on each side of the pixel's cell), and
    ``origin`` is the (row, col) of the arrays' first pixel in the scene: every pixel of a cell
    gets the cell's gain. That gain is the ``ln.quantile`` of the noise level
    (:func:`noise_level`) over the neighbourhood's valid pixels, divided by the scene's
    (``ln.ref``) and clipped to ``ln.limits``. The noise level is sampled where the scene's
    row and column are both multiples of :func:`noise_sample_step` (2 at the default 0.5 m), a
    quarter of the pixels evenly spread: on three real pairs the gain moved by 0.2-0.3 % at
    the median pixel, 3 % at the 99th percentile (``benchmarks/noise_sampling.py``). It is
    read off a ladder of levels a factor sqrt(2) apart, by exact sample counts (per cell,
    then summed over the square), and interpolated in log between the rungs it falls between,
    so an array with :func:`local_reach_px` of margin gives the whole-array value. A
    neighbourhood with fewer than a fifth of its samples valid keeps the scene's unit (1).
    """
    cells = _cell_gain(sb, sa, valid, ln, origin)
    return np.ascontiguousarray(cells.expand(cells.gain))


def _cell_gain(sb: list[np.ndarray], sa: list[np.ndarray], valid: np.ndarray, ln: LocalNoise,
               origin: tuple[int, int]) -> _CellGain:
    """:func:`local_gain_map` per cell of the lattice."""
    cell, half = noise_cells(ln.radius_px)
    every = noise_sample_step(ln.radius_px)
    m, n = valid.shape
    # the samples: pixels whose scene row and column are multiples of ``every``
    r0, c0 = -origin[0] % every, -origin[1] % every
    pick = (slice(r0, None, every), slice(c0, None, every))
    e2 = noise_level([x[pick] for x in sb], [x[pick] for x in sa], ln.noise)
    lo, hi = ln.limits
    rungs = 2.0 ** (np.arange(math.floor(2 * math.log2(lo)), math.ceil(2 * math.log2(hi)) + 1) / 2)
    n_levels = len(rungs)
    # rung of each sample: how many levels its noise level reaches; invalid ones in a slot
    # of their own, never counted
    rung = np.zeros(e2.shape, np.uint8)
    for g in rungs:
        rung += e2 >= np.float32((ln.ref * g) ** 2)
    rung[~valid[pick]] = n_levels + 1
    oy, ox = origin[0] % cell, origin[1] % cell
    ny, nx = -(-(m + oy) // cell), -(-(n + ox) // cell)
    rows = ((np.arange(r0, m, every) + oy) // cell * nx).astype(np.int64)
    cols = ((np.arange(c0, n, every) + ox) // cell).astype(np.int64)
    index = rows[:, None] + cols[None, :] + rung.astype(np.int64) * (ny * nx)
    hist = np.bincount(index.ravel(), minlength=(n_levels + 2) * ny * nx)
    hist = hist.reshape(n_levels + 2, ny, nx)
    # per cell, then over each cell's square: pixels below level j (j < n_levels), and valid
    below_level = _box_sum_cells(hist[:n_levels + 1].cumsum(axis=0), half)
    count, counts = below_level[n_levels], below_level[:n_levels]
    need = np.float32(ln.quantile) * np.maximum(count, 1).astype(np.float32)
    need_i = np.ceil(need)
    # the counts grow with the level: the quantile lies above ``below`` levels, between the
    # counts of the highest level short of it (``lower``) and of the lowest reaching it
    below = np.zeros((ny, nx), np.int64)
    lower = np.zeros((ny, nx), np.float32)
    upper = np.zeros((ny, nx), np.float32)
    for j in range(n_levels - 1, -1, -1):  # from the top level down
        under = counts[j] < need_i
        below += under
        np.copyto(upper, counts[j], where=~under, casting="unsafe")
        np.copyto(lower, counts[j], where=under & (below == 1), casting="unsafe")
    t = np.clip((need - lower) / np.maximum(upper - lower, 1), 0, 1)
    step = np.float32(math.sqrt(2))
    gain = np.float32(rungs[0]) / step * np.asarray(step ** below.astype(np.float32)) * step ** t
    gain[below == 0] = rungs[0]
    gain[below == n_levels] = hi
    gain = np.clip(gain, lo, hi).astype(np.float32)
    # a fifth: a scene corner's square holds about a quarter of a whole one (less when the
    # corner cell is cut short), and the corners keep their own gain
    gain[count < ((2 * half + 1) * cell // every) ** 2 / 5] = 1
    return _CellGain(gain, cell, (oy, ox), (m, n))


def local_units(sb: list[np.ndarray], sa: list[np.ndarray], valid: np.ndarray,
                ln: LocalNoise, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Each band's noise unit at each pixel, (B, M, N) float32: the scene's noise times the
    local gain (:func:`local_gain_map`), never below the band's floor."""
    gain = local_gain_map(sb, sa, valid, ln, origin)
    return np.stack([np.maximum(np.float32(ln.noise[k]) * gain, np.float32(ln.floor[k]))
                     for k in range(len(sb))])


def change_score(before: np.ndarray, after: np.ndarray, valid: np.ndarray, sigma: np.ndarray, *,
                 smoothing_px: float = 0.8, tolerance_px: int = 1,
                 noise: LocalNoise | None = None, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Per-pixel change score in noise standard deviations, (M, N) float32.

    Parameters
    ----------
    before, after : (B, M, N) float32
        Co-registered, radiometrically normalised images.
    valid : (M, N) bool
        Pixels valid in both; the score is 0 elsewhere.
    sigma : (B,) float
        Robust standard deviation of each band's smoothed difference (1.4826 MAD).
    smoothing_px : float
        Gaussian sigma applied to both images first.
    tolerance_px : int
        Neighbourhood radius of the min/max envelope (misregistration tolerated).
    noise : LocalNoise, optional
        When given, each pixel's unit is its neighbourhood's noise (:func:`local_units`) instead
        of ``sigma``.
    origin : (int, int)
        (row, col) of the arrays' first pixel in the scene, where the local unit's lattice of
        cells is anchored.

    Notes
    -----
    For each band the distance of AFTER to BEFORE's local [min, max] envelope and of BEFORE to
    AFTER's is taken; the larger of the two, divided by sigma, is combined over bands as a root
    mean square. Edges displaced by less than ``tolerance_px`` score zero; an object of a few
    pixels scores over its whole footprint.
    """
    kernel = _disk(tolerance_px) if tolerance_px > 0 else None
    if kernel is None and tolerance_px > 0:
        kernel = np.ones((3, 3), np.uint8)
    acc = np.zeros(before.shape[1:], np.float32)
    sbs = [smooth(before[b], smoothing_px) for b in range(before.shape[0])]
    sas = [smooth(after[b], smoothing_px) for b in range(before.shape[0])]
    units = None if noise is None else local_units(sbs, sas, valid, noise, origin)
    for b in range(before.shape[0]):
        sb, sa = sbs[b], sas[b]
        d = np.maximum(_interval_distance(sa, sb, kernel), _interval_distance(sb, sa, kernel))
        acc += (d / (float(sigma[b]) if units is None else units[b])) ** 2
    score = np.sqrt(acc / before.shape[0])
    score[~valid] = 0
    return score


def local_correlation(a: np.ndarray, b: np.ndarray, size_px: int = 9) -> np.ndarray:
    """Normalised cross-correlation of two (M, N) images in a sliding ``size_px`` window."""
    k = (size_px, size_px)
    mu_a = cv2.boxFilter(a, -1, k)
    mu_b = cv2.boxFilter(b, -1, k)
    cov = cv2.boxFilter(a * b, -1, k) - mu_a * mu_b
    var_a = cv2.boxFilter(a * a, -1, k) - mu_a * mu_a
    var_b = cv2.boxFilter(b * b, -1, k) - mu_b * mu_b
    return cov / np.sqrt(np.maximum(var_a * var_b, 1e-6))


def shadow_like(darker: np.ndarray, brighter: np.ndarray, *,
                ratio_range: tuple[float, float] = (0.15, 0.72), max_chroma_shift: float = 0.06,
                blue_band: int | None = 2, min_blue_gain: float = 0.008) -> np.ndarray:
    """Pixels where ``darker`` could be ``brighter`` dimmed by a shadow, (M, N) bool.

    A shadow dims every band by about the same factor, and a little less in the blue, since
    shadows are lit by the blue sky: the luminance ratio lies in ``ratio_range``, no band's share
    of the pixel's sum moves by more than ``max_chroma_shift`` and the blue share (0-based band
    ``blue_band``, when the image has that many bands) grows by at least ``min_blue_gain``. The
    pipeline compares red, green and blue first and in that order wherever the files' colour
    interpretation says which is which (:func:`pipeline.io.raster.matching_bands`), so 2 is blue;
    a file that does not say is taken to store red, green, blue. A dark
    olive vehicle loses blue instead, and a white aircraft over grey concrete keeps the same
    shares. Single-band images are judged by the ratio alone.
    """
    eps = 1e-3
    lum_d = darker.mean(axis=0)
    lum_b = brighter.mean(axis=0)
    ratio = lum_d / np.maximum(lum_b, eps)
    out = (ratio >= ratio_range[0]) & (ratio <= ratio_range[1])
    if darker.shape[0] > 1:
        chroma_d = darker / np.maximum(darker.sum(axis=0), eps)
        chroma_b = brighter / np.maximum(brighter.sum(axis=0), eps)
        out &= np.abs(chroma_d - chroma_b).max(axis=0) <= max_chroma_shift
        if blue_band is not None and darker.shape[0] > blue_band:
            out &= chroma_d[blue_band] >= chroma_b[blue_band] + min_blue_gain
    return out


_SHADOW_WINDOW_PX = 9


def shadow_change(before: np.ndarray, after: np.ndarray, *, min_correlation: float = 0.5,
                  window_px: int = _SHADOW_WINDOW_PX) -> np.ndarray:
    """Pixels whose change is only a change of illumination (a shadow falling or lifting).

    The darker image is the brighter one dimmed (:func:`shadow_like`) and the ground's texture
    shows through: the local correlation of the two images (``window_px`` window, luminance)
    stays high. An object hides the ground's texture instead. Removing these pixels makes the
    shadows of static objects, which move with the sun, vanish from the mask.
    """
    b_darker = before.mean(axis=0) < after.mean(axis=0)
    darker = np.where(b_darker, before, after)
    brighter = np.where(b_darker, after, before)
    corr = local_correlation(before.mean(axis=0), after.mean(axis=0), window_px)
    return shadow_like(darker, brighter) & (corr >= min_correlation)


def change_mask(score: np.ndarray, valid: np.ndarray, res_m: float, cfg: DifferenceConfig,
                shadow: np.ndarray | None = None, structure: np.ndarray | None = None
                ) -> np.ndarray:
    """Cleaned change mask, (M, N) bool, from local operations only.

    Seeds (score above ``threshold_sigma``) grow into pixels above ``low_threshold_sigma`` within
    ``grow_m``; a closing joins the pieces of one object, shadow-explained pixels are removed and
    an opening removes specks. Pixels invalid in either image, or within ``nodata_margin_px`` of
    such a pixel, never count.

    Every step reaches a bounded distance (:func:`mask_reach_px`), so a block processed with that
    margin gives exactly the whole-array result in its core.

    Parameters
    ----------
    score : (M, N) float32
        Change score in noise standard deviations (:func:`change_score`).
    valid : (M, N) bool
        Pixels valid in both images.
    res_m : float
        Pixel size, metres (morphology is given in metres).
    shadow : (M, N) bool, optional
        Pixels whose change a shadow explains (:func:`shadow_change`).
    structure : (M, N) float32, optional
        The structure score (:func:`structure_score`); its pixels above the thresholds seed and
        grow the mask as the score's do.
    """
    seeds = (score > cfg.threshold_sigma).astype(np.uint8)
    low = (score > cfg.low_threshold_sigma).astype(np.uint8)
    _add_structure(seeds, low, structure, valid, cfg)
    return _cleaned(seeds, low, valid, res_m, cfg,
                    None if shadow is None else lambda rows, cols: shadow[rows, cols])


def _add_structure(seeds: np.ndarray, low: np.ndarray, structure: np.ndarray | None,
                   valid: np.ndarray, cfg: DifferenceConfig) -> None:
    """Set in ``seeds`` and ``low`` (uint8 0/1, in place) the valid pixels where the structure
    score passes the same thresholds as the level score; nothing when it is None."""
    if structure is not None:
        seeds |= ((structure > cfg.threshold_sigma) & valid).view(np.uint8)
        low |= ((structure > cfg.low_threshold_sigma) & valid).view(np.uint8)


def _cleaned(seeds: np.ndarray, low: np.ndarray, valid: np.ndarray, res_m: float,
             cfg: DifferenceConfig, shadow_in) -> np.ndarray:
    """:func:`change_mask` from its seeds and low-threshold pixels (uint8 0/1).

    ``shadow_in(rows, cols)`` gives the shadow mask of a region (two slices); it is asked only
    around the pixels the closing leaves set, which are all it can remove.
    """
    grow_k = _disk(cfg.grow_m / res_m)
    if grow_k is not None:
        seeds = cv2.dilate(seeds, grow_k)
    mask = seeds & low
    close_k = _disk(cfg.closing_m / res_m)
    if close_k is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close_k)
    if shadow_in is not None and mask.any():
        for rows, cols in _regions_of(mask):
            mask[rows, cols] &= ~shadow_in(rows, cols).astype(np.uint8) & 1
    open_k = _disk(cfg.opening_m / res_m)
    if open_k is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, open_k)
    border = max(cfg.nodata_margin_px, _edge_reach_px(cfg))
    if valid.all():
        return mask.astype(bool)  # the erosion below would keep every pixel
    core_valid = valid.astype(np.uint8)
    if border > 0:
        core_valid = cv2.erode(core_valid, np.ones((2 * border + 1, 2 * border + 1), np.uint8),
                               borderType=cv2.BORDER_REPLICATE)
    return (mask & core_valid).astype(bool)


def _edge_reach_px(cfg: DifferenceConfig) -> int:
    """How far from nodata the scores feel its edge (the smoothing, the gradient, the
    envelope): the least ``nodata_margin_px`` that keeps that edge out of the mask."""
    return (int(math.ceil(2 * cfg.smoothing_px + cfg.tolerance_px))
            + (1 if cfg.structure_unit > 0 else 0))


def _regions_of(mask: np.ndarray, cell_px: int = 16, max_regions: int = 64
                ) -> list[tuple[slice, slice]]:
    """Rectangles that hold every set pixel of ``mask``: the boxes of the connected groups of
    ``cell_px`` cells holding some (much cheaper than the pixels' own components), or the whole
    array when the groups are many or cover much of it."""
    stats, n_cells = cell_groups(mask, cell_px)
    if len(stats) > max_regions or stats[:, cv2.CC_STAT_AREA].sum() > n_cells // 4:
        return [(slice(None), slice(None))]
    return [(slice(int(y) * cell_px, int(y + hh) * cell_px),
             slice(int(x) * cell_px, int(x + ww) * cell_px)) for x, y, ww, hh, _ in stats]


def cell_groups(mask: np.ndarray, cell_px: int, *, grow_cells: int = 0
                ) -> tuple[np.ndarray, int]:
    """The connected groups (8-neighbours) of the ``cell_px`` cells of ``mask`` holding a set
    pixel, each cell grown by ``grow_cells`` cells first: OpenCV's component stats of each
    group, (G, 5) x, y, width, height (cells) and area (cells), and the count of cells."""
    h, w = mask.shape
    cells = np.zeros((-(-h // cell_px) * cell_px, -(-w // cell_px) * cell_px), bool)
    cells[:h, :w] = mask
    cells = cells.reshape(cells.shape[0] // cell_px, cell_px, -1, cell_px).any(axis=(1, 3))
    cells = cells.view(np.uint8)
    if grow_cells > 0:
        cells = cv2.dilate(cells, np.ones((2 * grow_cells + 1,) * 2, np.uint8))
    stats = cv2.connectedComponentsWithStats(cells, connectivity=8)[2]
    return stats[1:], cells.size


def _may_seed(diffs: list[np.ndarray], valid: np.ndarray, noise: LocalNoise,
              cfg: DifferenceConfig) -> bool:
    """Whether any valid difference passes the seed threshold at the least unit: no unit is
    smaller than the band's noise at the lowest gain, or its floor; where none passes, there is
    no seed and nothing to count."""
    least = [np.maximum(np.float32(noise.noise[k]) * np.float32(noise.limits[0]),
                        np.float32(noise.floor[k])) for k in range(len(diffs))]
    return any(((diffs[k] > cfg.threshold_sigma * least[k] * (1 - 1e-4)) & valid).any()
               for k in range(len(diffs)))


def block_change_mask(before: np.ndarray, after: np.ndarray, valid: np.ndarray, sigma: np.ndarray,
                      *, res_m: float, cfg: DifferenceConfig, noise: LocalNoise | None = None,
                      origin: tuple[int, int] = (0, 0), structure_unit: float | None = None
                      ) -> np.ndarray:
    """The mask of :func:`change_mask` with :func:`change_score` and :func:`shadow_change`,
    (M, N) bool, computing each costly part only where it can matter.

    Parameters are those of :func:`change_score` and :func:`change_mask`; with ``noise`` the
    unit is the local one (:func:`local_units`); with ``structure_unit`` the
    :func:`structure_score` in that unit seeds and grows the mask too.

    Notes
    -----
    A pixel's score never exceeds ``max_b |smoothed after - smoothed before| / sigma_b`` (each
    envelope holds the pixel itself), so the score is computed only at the pixels where that
    bound passes ``low_threshold_sigma``; elsewhere neither threshold can be passed. A block
    without seeds is empty; with a local unit, a block where the bound passes the seed
    threshold nowhere even at the smallest unit the gain allows stops before the gain is
    counted, unless the structure score (computed at every pixel) has a seed there. The shadow
    test runs only around the pixels left after the closing
    (the only ones it can remove), with the margin its correlation window needs. The result is
    the whole-array one: the same arithmetic at every pixel that counts.
    """
    return screened_change_mask(before, after, valid, sigma, res_m=res_m, cfg=cfg, noise=noise,
                                origin=origin, structure_unit=structure_unit,
                                screened=False).mask


#: side (metres) of the screen's cells: small enough that an object of the smallest class
#: covers a whole cell or most of two
SCREEN_CELL_M = 2.0
#: side (pixels) of the cells the screen's windows are gathered in
WINDOW_CELL_PX = 16
#: above this share of a block, the screened mask is computed on the whole block
WINDOW_WHOLE_SHARE = 0.6


@dataclass(frozen=True)
class Screened:
    """A block's change mask from :func:`screened_change_mask`, and the share of the block's
    pixels its windows covered (1.0: the whole block)."""

    mask: np.ndarray
    looked_share: float


def screen(before: np.ndarray, after: np.ndarray, valid: np.ndarray, sigma: np.ndarray, *,
           res_m: float, cfg: DifferenceConfig, noise: LocalNoise | None = None,
           structure_unit: float | None = None, gain: np.ndarray | None = None) -> np.ndarray:
    """Where a block may hold a seed of the change mask, (M, N) bool: a cheap, deliberately
    loose look at cells of ``SCREEN_CELL_M``.

    A seed is a pixel whose score passes ``threshold_sigma``, which needs some band's smoothed
    difference to pass ``threshold_sigma`` times the least unit that band can have (its noise at
    the lowest local gain, or its floor), or the structure score to pass it. The screen
    averages both images over each cell's valid pixels and keeps the cells where some band's
    difference of the means passes ``cfg.screen`` times that least seed contrast, or where the
    cells' gradient magnitudes (of the bands' mean) differ by ``cfg.screen`` times the least
    seed outline. An object of the smallest class changed covers whole cells, whose mean then
    differs as its pixels do; the share leaves room for the cells it only half covers.
    With ``gain`` (the local gain of each pixel, :func:`local_gain_map`), the least unit is
    each cell's own: the band's noise at the cell's lowest gain, or its floor. Cells with no
    valid pixel are never kept.
    """
    f = max(1, round(SCREEN_CELL_M / res_m))
    m, n = valid.shape
    ny, nx = -(-m // f), -(-n // f)
    every = (m % f, n % f) == (0, 0) and bool(valid.all())
    v = None if every else valid.astype(np.float32)

    def means(x: np.ndarray) -> np.ndarray:  # each cell's mean over its f x f pixels
        if not every:  # over the valid pixels; a cell cut short by the edge misses the rest
            x = cv2.copyMakeBorder(x * v, 0, ny * f - m, 0, nx * f - n, cv2.BORDER_CONSTANT,
                                   value=0)
        return cv2.resize(x, (nx, ny), interpolation=cv2.INTER_AREA)

    share = np.ones((ny, nx), np.float32) if every else means(np.ones((m, n), np.float32))
    some = share > 0
    safe = np.where(some, share, 1).astype(np.float32)
    if noise is None:
        least = [float(sigma[k]) for k in range(before.shape[0])]
    elif gain is None:
        least = [max(noise.noise[k] * noise.limits[0], noise.floor[k])
                 for k in range(before.shape[0])]
    else:  # each cell's lowest gain
        g = cv2.copyMakeBorder(gain, 0, ny * f - m, 0, nx * f - n, cv2.BORDER_REPLICATE)
        g = g.reshape(ny, f, nx, f).min(axis=(1, 3))
        least = [np.maximum(np.float32(noise.noise[k]) * g, np.float32(noise.floor[k]))
                 for k in range(before.shape[0])]
    kept = np.zeros((ny, nx), bool)
    mb = np.zeros((ny, nx), np.float32)
    ma = np.zeros((ny, nx), np.float32)
    for k in range(before.shape[0]):
        cb = means(before[k]) / safe
        ca = means(after[k]) / safe
        kept |= np.abs(ca - cb) > cfg.screen * cfg.threshold_sigma * least[k]
        mb += cb
        ma += ca
    if structure_unit:
        k = np.float32(before.shape[0])
        g = np.abs(_image_gradient(ma / k, sigma_px=0) - _image_gradient(mb / k, sigma_px=0))
        kept |= g > cfg.screen * cfg.threshold_sigma * structure_unit
    kept &= some
    return np.repeat(np.repeat(kept, f, axis=0), f, axis=1)[:m, :n]


def windows_near(marked: np.ndarray, reach_px: int, *, cell_px: int = WINDOW_CELL_PX,
                 whole_share: float = WINDOW_WHOLE_SHARE) -> list[tuple[slice, slice]]:
    """The boxes of the groups of ``cell_px`` cells within ``reach_px`` of a marked pixel of a
    block, overlapping boxes merged, clipped to the block; the whole block when they cover more
    than ``whole_share`` of it; none when nothing is marked."""
    h, w = marked.shape
    if not marked.any():
        return []
    stats, _ = cell_groups(marked, cell_px, grow_cells=math.ceil(reach_px / cell_px))
    boxes = disjoint([(int(y), int(x), int(y + hh), int(x + ww)) for x, y, ww, hh, _ in stats])
    area = sum((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in boxes) * cell_px ** 2
    if area > whole_share * h * w:
        return [(slice(0, h), slice(0, w))]
    return [(slice(r0 * cell_px, min(h, r1 * cell_px)),
             slice(c0 * cell_px, min(w, c1 * cell_px))) for r0, c0, r1, c1 in boxes]


def disjoint(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Boxes (r0, c0, r1, c1) with the overlapping ones replaced by their union, until none
    overlaps (quadratic or worse in the count: slow for the hundreds of a busy block)."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                p, q = boxes[i], boxes[j]
                if p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]:
                    boxes[i] = (min(p[0], q[0]), min(p[1], q[1]),
                                max(p[2], q[2]), max(p[3], q[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(boxes)


def seed_reach_px(cfg: DifferenceConfig, res_m: float) -> int:
    """How far (pixels) from a seed a pixel of the cleaned mask can lie: the growth, the
    closing's reach, and the score's own (smoothing, tolerance)."""
    r = lambda m: round(m / res_m)  # noqa: E731
    return (math.ceil(3 * cfg.smoothing_px) + cfg.tolerance_px + r(cfg.grow_m)
            + 2 * r(cfg.closing_m) + 2)


def screened_change_mask(before: np.ndarray, after: np.ndarray, valid: np.ndarray,
                         sigma: np.ndarray, *, res_m: float, cfg: DifferenceConfig,
                         noise: LocalNoise | None = None, origin: tuple[int, int] = (0, 0),
                         structure_unit: float | None = None, screened: bool = True,
                         inner: tuple[slice, slice] | None = None) -> Screened:
    """:func:`block_change_mask`, its per-pixel work done only in windows around what
    :func:`screen` keeps (``cfg.screen`` > 0 and ``screened``), or only where ``inner`` needs.

    Both images are smoothed, and the local gain counted, over the whole block; the rest (the
    differences, the structure score, the score, the seeds and the cleaning) runs in each
    window: the kept pixels grown by :func:`seed_reach_px` (where the mask can be), then by
    :func:`window_reach_px` (what the mask there depends on, once smoothed). Each window's
    mask is kept in its inner part, which is exactly the whole block's there (the mask is
    local). So the result is the whole block's wherever the screen kept every seed; outside
    the windows it is empty.

    ``inner`` (rows, columns of the block, e.g. a block's core inside the margin it was read
    with), unscreened: the mask is wanted there only. The per-pixel work runs on it grown by
    :func:`window_reach_px` (a quarter less than a 1024 px core's whole padded block at
    0.5 m), and the mask is exactly the whole block's in ``inner``, empty elsewhere.
    ``looked_share`` stays 1.0: the screen dropped nothing.
    """
    n_bands = before.shape[0]
    m, n = valid.shape
    sb = [np.ascontiguousarray(smooth(before[k], cfg.smoothing_px)) for k in range(n_bands)]
    sa = [np.ascontiguousarray(smooth(after[k], cfg.smoothing_px)) for k in range(n_bands)]
    looks = [(slice(0, m), slice(0, n))]
    reach = window_reach_px(cfg, res_m)
    gains: list[_CellGain] = []

    def cells() -> _CellGain:  # counted once, when first needed
        if not gains:
            gains.append(_cell_gain(sb, sa, valid, noise, origin))
        return gains[0]

    if screened and cfg.screen > 0:
        # first at the least unit the gain allows (cheap: most quiet blocks stop here), then
        # at each cell's own
        kw = dict(res_m=res_m, cfg=cfg, noise=noise, structure_unit=structure_unit)
        kept = screen(before, after, valid, sigma, **kw)
        if noise is not None and kept.any():
            kept &= screen(before, after, valid, sigma, gain=cells().expand(cells().gain), **kw)
        looks = windows_near(kept, seed_reach_px(cfg, res_m) + reach)
    elif inner is not None:
        rows, cols = inner
        looks = [(slice(max(0, rows.start - reach), min(m, rows.stop + reach)),
                  slice(max(0, cols.start - reach), min(n, cols.stop + reach)))]
    mask = np.zeros((m, n), bool)
    if not looks:
        return Screened(mask, 0.0)

    whole = looks == [(slice(0, m), slice(0, n))]
    for rows, cols in looks:
        part = _window_mask(sb, sa, before, after, valid, sigma, window=(rows, cols),
                            res_m=res_m, cfg=cfg, noise=noise,
                            cells=None if noise is None else cells,
                            structure_unit=structure_unit)
        if whole:
            return Screened(part, 1.0)
        # the inner part: window_reach_px from each side that is not the block's own edge
        r0 = 0 if rows.start == 0 else reach
        c0 = 0 if cols.start == 0 else reach
        r1 = part.shape[0] - (0 if rows.stop >= m else reach)
        c1 = part.shape[1] - (0 if cols.stop >= n else reach)
        if r1 > r0 and c1 > c0:
            mask[rows.start + r0:rows.start + r1, cols.start + c0:cols.start + c1] |= \
                part[r0:r1, c0:c1]
    if not (screened and cfg.screen > 0):
        return Screened(mask, 1.0)
    share = sum((r.stop - r.start) * (c.stop - c.start) for r, c in looks) / (m * n)
    return Screened(mask, share)


def window_reach_px(cfg: DifferenceConfig, res_m: float) -> int:
    """How far (pixels) a mask pixel depends on the smoothed images and the local gain around
    it: :func:`mask_reach_px` without the smoothing and the gain's neighbourhood."""
    return (mask_reach_px(cfg, res_m) - math.ceil(3 * cfg.smoothing_px)
            - (local_reach_px(local_radius_px(cfg, res_m)) if cfg.local_noise_m > 0 else 0))


def _window_mask(sb: list[np.ndarray], sa: list[np.ndarray], before: np.ndarray,
                 after: np.ndarray, valid_block: np.ndarray, sigma: np.ndarray, *,
                 window: tuple[slice, slice], res_m: float, cfg: DifferenceConfig,
                 noise: LocalNoise | None, cells: Callable[[], _CellGain] | None,
                 structure_unit: float | None) -> np.ndarray:
    """:func:`block_change_mask` of the ``window`` (rows, columns) of a block whose bands are
    smoothed (``sb``, ``sa``); ``cells()`` gives the block's local gain."""
    rows, cols = window
    n_bands = len(sb)
    sb = [x[rows, cols] for x in sb]
    sa = [x[rows, cols] for x in sa]
    valid = valid_block[rows, cols]
    shape = valid.shape
    diffs = [cv2.absdiff(sa[k], sb[k]) for k in range(n_bands)]
    empty = np.zeros(shape, bool)
    structure = None
    # whether the structure score seeds anywhere: where neither score seeds, nothing counts
    # (its pixels above the low threshold still grow the level score's seeds)
    outlined = False
    if structure_unit:
        structure = structure_score(sb, sa, structure_unit, cfg.tolerance_px)
        outlined = bool(((structure > cfg.threshold_sigma) & valid).any())
    if noise is not None and not outlined and not _may_seed(diffs, valid, noise, cfg):
        return empty
    cells = None if cells is None else cells().window(rows, cols)

    def unit(k: int, gain_k):  # band k's unit where the gain is gain_k (the local_units one)
        return np.maximum(np.float32(noise.noise[k]) * gain_k, np.float32(noise.floor[k]))

    bound_passes = np.zeros(shape, bool)
    for k in range(n_bands):
        # 1e-4 below the threshold: the bound and the score round differently
        if cells is None:
            limit = cfg.low_threshold_sigma * float(sigma[k]) * (1 - 1e-4)
        else:  # the same arithmetic once per cell
            limit = cells.expand(cfg.low_threshold_sigma * unit(k, cells.gain) * (1 - 1e-4))
        bound_passes |= diffs[k] > limit
    at = np.flatnonzero(bound_passes & valid)
    if not at.size and not outlined:
        return empty
    gain_at = None if cells is None else cells.at(at)
    score = _score_at(sb, sa, at, shape, sigma if cells is None else
                      [unit(k, gain_at) for k in range(n_bands)], cfg.tolerance_px)
    if not (score > cfg.threshold_sigma).any() and not outlined:
        return empty
    seeds = np.zeros(shape, np.uint8)
    seeds.flat[at[score > cfg.threshold_sigma]] = 1
    low = np.zeros(shape, np.uint8)
    low.flat[at[score > cfg.low_threshold_sigma]] = 1
    _add_structure(seeds, low, structure, valid, cfg)
    big = valid_block.shape
    y0, x0 = rows.start, cols.start

    def shadow_in(r: slice, c: slice) -> np.ndarray:
        # the correlation window's half width around the region, clipped to the block (not
        # to the window: the whole block's arithmetic)
        h = _SHADOW_WINDOW_PX // 2
        r0, r1, _ = r.indices(shape[0])
        c0, c1, _ = c.indices(shape[1])
        r0, r1, c0, c1 = r0 + y0, r1 + y0, c0 + x0, c1 + x0
        ya, xa = max(0, r0 - h), max(0, c0 - h)
        sub = (slice(None), slice(ya, min(big[0], r1 + h)), slice(xa, min(big[1], c1 + h)))
        shadow = shadow_change(before[sub], after[sub], window_px=_SHADOW_WINDOW_PX)
        return shadow[r0 - ya:r1 - ya, c0 - xa:c1 - xa]

    return _cleaned(seeds, low, valid, res_m, cfg, shadow_in)


DENSE_SHARE = 1 / 12  # above this share of a block's pixels, _score_at takes whole envelopes


def _score_at(sb: list[np.ndarray], sa: list[np.ndarray], at: np.ndarray, shape: tuple[int, int],
              sigma: np.ndarray, tolerance_px: int) -> np.ndarray:
    """:func:`change_score` at the flat indexes ``at`` of smoothed bands, (K,) float32.

    The envelopes are the minimum and maximum over the kernel's neighbours that lie inside the
    array, as ``cv2.erode`` and ``cv2.dilate`` take them; the arithmetic is theirs, step by step.
    When ``at`` holds more than ``DENSE_SHARE`` of the pixels, the envelopes are those of
    ``cv2.erode`` and ``cv2.dilate`` over the whole array, read at ``at``: the same values
    (a maximum is exact), faster once gathering each pixel's neighbours costs more than the
    whole-array filters (a throwaway timing on 1270 px blocks: sparse 108 ms, whole 42 ms at a
    fifth of the pixels; 16 and 30 ms at 0.5 %).
    """
    kernel = _disk(tolerance_px) if tolerance_px > 0 else None
    if kernel is None and tolerance_px > 0:
        kernel = np.ones((3, 3), np.uint8)
    dense = kernel is not None and at.size > DENSE_SHARE * shape[0] * shape[1]
    neighbours = None
    if kernel is not None and not dense:
        rows, cols = np.divmod(at, shape[1])
        r = kernel.shape[0] // 2
        offsets = np.argwhere(kernel) - r
        # clipping a neighbour into the array lands on another neighbour (disks are convex)
        neighbours = (np.clip(rows[None] + offsets[:, :1], 0, shape[0] - 1) * shape[1]
                      + np.clip(cols[None] + offsets[:, 1:], 0, shape[1] - 1))

    def distance(x, ref):
        if kernel is None:
            return np.abs(x - ref.ravel()[at])
        if dense:
            return _outside(x, cv2.erode(ref, kernel).ravel()[at],
                            cv2.dilate(ref, kernel).ravel()[at])
        around = ref.ravel()[neighbours]
        return _outside(x, around.min(axis=0), around.max(axis=0))

    acc = np.zeros(at.size, np.float32)
    for k in range(len(sb)):
        xb, xa = sb[k].ravel()[at], sa[k].ravel()[at]
        d = np.maximum(distance(xa, sb[k]), distance(xb, sa[k]))
        unit = sigma[k] if isinstance(sigma[k], np.ndarray) else float(sigma[k])
        acc += (d / unit) ** 2
    return np.sqrt(acc / len(sb))


def mask_reach_px(cfg: DifferenceConfig, res_m: float) -> int:
    """How far (pixels) the value of one mask pixel depends on its neighbours' inputs."""
    r = lambda m: int(round(m / res_m))  # noqa: E731
    return (int(math.ceil(3 * cfg.smoothing_px)) + cfg.tolerance_px + r(cfg.grow_m) + 5
            + (1 if cfg.structure_unit > 0 else 0)  # the gradient's 3 x 3 kernel
            + 2 * r(cfg.closing_m) + 2 * r(cfg.opening_m)
            + max(cfg.nodata_margin_px, _edge_reach_px(cfg)) + 2
            + (local_reach_px(local_radius_px(cfg, res_m)) if cfg.local_noise_m > 0 else 0))


def local_radius_px(cfg: DifferenceConfig, res_m: float) -> int:
    """Half side (pixels) of the neighbourhood of the local noise unit; 0 when it is off."""
    return round(cfg.local_noise_m / res_m) if cfg.local_noise_m > 0 else 0
