"""Co-registration: estimate the residual shift of AFTER's content after reprojection.

AFTER is first resampled onto the BEFORE grid (see :func:`pipeline.io.warp.warped_onto`); real
pairs from different dates still differ by a few pixels. This module measures that residual shift
from several windows by phase correlation of gradient images, and forms a consensus.
"""
from __future__ import annotations

import logging
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial

import cv2
import numpy as np
from scipy import ndimage

from ..io.raster import input_px
from ..io.readers import one_opencv_thread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowShift:
    """The shift measured in one window: centre (col, row) on the BEFORE grid, shift, peak."""

    col_px: float
    row_px: float
    dx_px: float
    dy_px: float
    peak: float
    inlier: bool = True


@dataclass(frozen=True)
class Shift:
    """Displacement of AFTER's content relative to BEFORE, BEFORE pixels (x right, y down).

    ``quality`` in [0, 1] combines the share of windows that agree with the consensus and the
    strength of their correlation peaks. ``spread_px`` is the median distance of the inliers
    from the consensus.
    """

    dx_px: float
    dy_px: float
    quality: float
    method: str
    spread_px: float = 0.0
    windows: tuple[WindowShift, ...] = field(default=())
    local_spread_px: float = 0.0  # median distance of the agreeing windows from the shift

    @property
    def n_inliers(self) -> int:
        return sum(w.inlier for w in self.windows)

    def scaled(self, k: int) -> Shift:
        """The shift measured on pixels ``k`` times the size of the files' own
        (``processing.pixel_m``), in the files' own pixels."""
        if k == 1:
            return self
        windows = tuple(replace(w, col_px=float(input_px(w.col_px, k)),
                                row_px=float(input_px(w.row_px, k)), dx_px=w.dx_px * k,
                                dy_px=w.dy_px * k) for w in self.windows)
        return replace(self, dx_px=self.dx_px * k, dy_px=self.dy_px * k,
                       spread_px=self.spread_px * k, windows=windows,
                       local_spread_px=self.local_spread_px * k)


def to_luminance(image: np.ndarray, band: int | None = None) -> np.ndarray:
    """(B, M, N) -> (M, N) float32: one band (1-based) or the mean of all bands."""
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    if band is not None:
        return image[band - 1].astype(np.float32, copy=False)
    return image.mean(axis=0, dtype=np.float32)


def gradient_magnitude(image: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    """Gradient magnitude of a 2D image after Gaussian smoothing (illumination-robust texture)."""
    img = image.astype(np.float32, copy=False)
    if sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigma_px)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def _fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    out = image.copy()
    if not valid.all():
        out[~valid] = float(np.mean(image[valid])) if valid.any() else 0.0
    return out


#: decimals (pixels) a measured shift is rounded to
SHIFT_DECIMALS = 4


def _phase_correlate(ref: np.ndarray, mov: np.ndarray) -> tuple[float, float, float]:
    h, w = ref.shape
    hann = cv2.createHanningWindow((w, h), cv2.CV_32F)
    # phaseCorrelate overwrites its inputs with the windowed data: pass copies.
    (dx, dy), peak = cv2.phaseCorrelate(ref.copy(), mov.copy(), hann)
    return float(dx), float(dy), float(peak)


def _bspline_weights(t: float) -> np.ndarray:
    """The four taps of the cubic B-spline at fraction ``t`` (coefficients -1..2), float64."""
    return np.array([(1 - t) ** 3 / 6, (3 * t ** 3 - 6 * t ** 2 + 4) / 6,
                     (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6, t ** 3 / 6])


def _translate(image: np.ndarray, dx: float, dy: float, *,
               coefficients: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Sample ``image`` at (x + dx, y + dy): undoes a content displacement of (dx, dy).

    Cubic spline interpolation, as ``scipy.ndimage.shift(order=3, mode="nearest")`` does it
    (the same prefilter on the same edge-padded image, the same values to float rounding), but
    a translation's kernel is separable: two passes of four taps, four times faster.
    ``coefficients``, a dict kept by the caller for one ``image``, holds its prefiltered spline
    coefficients by padding: an image resampled again by a nearby shift (each refinement step)
    is prefiltered once, with the same values.
    """
    # cv2.warpAffine quantises positions to 1/32 px and measurably biased the refinement
    # (0.1 px) in our tests; the spline is exact at any fraction
    ix, iy = math.floor(dx), math.floor(dy)
    npad = 12 + max(abs(ix), abs(iy)) + 2  # scipy pads 12; the taps stay inside the padding
    coeff = None if coefficients is None else coefficients.get(npad)
    if coeff is None:
        coeff = ndimage.spline_filter(np.pad(image, npad, mode="edge"), order=3, mode="nearest",
                                      output=np.float64)
        if coefficients is not None:
            coefficients[npad] = coeff
    # sepFilter2D weighs coefficients x - 2 .. x + 1 into x (anchor at tap 2): the sample at
    # x + dx uses floor(x + dx) - 1 .. + 2, so it sits at x + ix + 1
    out = cv2.sepFilter2D(coeff, -1, _bspline_weights(dx - ix), _bspline_weights(dy - iy),
                          borderType=cv2.BORDER_REPLICATE)
    h, w = image.shape
    r0, c0 = npad + iy + 1, npad + ix + 1
    return out[r0:r0 + h, c0:c0 + w].astype(image.dtype if image.dtype.kind == "f" else np.float64)


def window_shift(reference: np.ndarray, moving: np.ndarray, *, refine_iterations: int = 3,
                 sigma_px: float = 1.0) -> tuple[float, float, float]:
    """Displacement of ``moving``'s content relative to ``reference``, and the peak strength.

    Parameters
    ----------
    reference, moving : (M, N) ndarray
        The same window of BEFORE and of AFTER (one band, intensities, no invalid pixels).
    refine_iterations : int
        After the first phase correlation, ``moving`` is resampled by the running estimate and
        the residual is measured again: sub-pixel peak interpolation is least biased near zero.
    sigma_px : float
        Gaussian smoothing before the gradient, pixels.

    Returns
    -------
    dx_px, dy_px : float
        Content displacement, x right, y down, pixels.
    peak : float
        Normalised phase-correlation peak of the first pass, 0 to 1.

    Notes
    -----
    Phase correlation (Kuglin & Hines, 1975) with a Hann window (``cv2.phaseCorrelate``) of
    gradient-magnitude images, which are insensitive to illumination and haze. The intensities
    are resampled, not the gradient magnitudes: those are not band-limited, and resampling them
    biased the estimate by 0.1 px in our tests.
    """
    ref_g = gradient_magnitude(reference, sigma_px)
    dx, dy, peak = _phase_correlate(ref_g, gradient_magnitude(moving, sigma_px))
    h, w = reference.shape
    coefficients: dict[int, np.ndarray] = {}
    for _ in range(refine_iterations):
        pad = int(math.ceil(max(abs(dx), abs(dy)))) + 4
        if 2 * pad + 32 > min(h, w):
            break
        moved = gradient_magnitude(_translate(moving, dx, dy, coefficients=coefficients),
                                   sigma_px)
        rdx, rdy, _ = _phase_correlate(ref_g[pad:h - pad, pad:w - pad],
                                       moved[pad:h - pad, pad:w - pad])
        dx, dy = dx + rdx, dy + rdy
        if abs(rdx) < 1e-3 and abs(rdy) < 1e-3:
            break
    return dx, dy, peak


def estimate_shift(windows: list[tuple[tuple[float, float], np.ndarray, np.ndarray, np.ndarray]],
                   *, max_shift_px: float = 32.0, inlier_tolerance_px: float = 0.5,
                   agreement_px: float = 3.0, refine_iterations: int = 3,
                   band: int | None = None, workers: int = 1) -> Shift | None:
    """Consensus shift of AFTER relative to BEFORE from several windows.

    Parameters
    ----------
    windows : list of ((col_px, row_px), before, after, valid)
        For each window: its centre on the BEFORE grid, BEFORE (B, M, N), AFTER resampled onto the
        same window (B', M, N), and the (M, N) mask where both are valid.
    max_shift_px : float
        Window results beyond this are rejected.
    inlier_tolerance_px : float
        Windows within this distance of the median shift are inliers.
    agreement_px : float
        Windows within this distance of the consensus agree with it (quality): pairs of other
        dates differ locally by a few pixels (relief, lean of tall things, moved shadows) and
        still share one shift.
    workers : int
        Windows measured side by side (each on one OpenCV thread); the same result.

    Returns
    -------
    Shift or None
        None when no window gave a usable measurement.

    Notes
    -----
    Gradient images make the estimate insensitive to illumination and haze; the median over
    windows, then the mean of the inliers, rejects windows pulled by changed objects, clouds or
    moving shadows (the consensus idea of AROSICS' tie-point filtering, Scheffler et al. 2017).
    """
    results: list[WindowShift] = []
    windows_used = []
    measured = partial(_measured, band=band, refine_iterations=refine_iterations)
    for ((col, row), *_), found in zip(windows, _map(measured, windows, workers)):
        if found is None:
            continue
        lums, (dx, dy, peak) = found
        if math.isfinite(dx) and math.isfinite(dy):
            results.append(WindowShift(col, row, dx, dy, peak))
            windows_used.append(lums)
    in_range = [r for r in results if math.hypot(r.dx_px, r.dy_px) <= max_shift_px]
    if not in_range:
        return None
    median = np.median([[r.dx_px, r.dy_px] for r in in_range], axis=0)
    shifts = np.array([[r.dx_px, r.dy_px] for r in results])
    dist = np.hypot(*(shifts - median).T)
    inlier = (dist <= inlier_tolerance_px) & (np.hypot(*shifts.T) <= max_shift_px)
    if not inlier.any():  # no two windows agree: keep the strongest peak, quality will be low
        inlier[int(np.argmax([r.peak if math.hypot(r.dx_px, r.dy_px) <= max_shift_px else -1
                              for r in results]))] = True
    results = [WindowShift(r.col_px, r.row_px, r.dx_px, r.dy_px, r.peak, bool(i))
               for r, i in zip(results, inlier)]
    peaks = np.array([r.peak for r in results])
    weights = peaks[inlier]
    consensus = (shifts[inlier] * weights[:, None]).sum(axis=0) / weights.sum()
    spread = float(np.median(np.hypot(*(shifts[inlier] - consensus).T)))
    d_all = np.hypot(*(shifts - consensus).T)
    agree = (d_all <= max(agreement_px, inlier_tolerance_px)) & (np.hypot(*shifts.T) <= max_shift_px)
    n_agree = int(agree.sum())
    agreement = n_agree / len(results) * min(1.0, n_agree / 3)
    strength = 1.0 - math.exp(-float(np.median(peaks[agree | inlier])) / 0.05)
    local_spread = float(np.median(d_all[agree])) if agree.any() else spread
    precision = math.exp(-local_spread / max(agreement_px, 1e-6))
    quality = agreement * strength * precision
    lums = [used for used, ok in zip(windows_used, inlier) if ok]
    refined = refine_shift(lums, float(consensus[0]), float(consensus[1]))
    # to 1e-4 px, far below its precision: OpenCV's phase correlation rounds differently with
    # its buffers' memory alignment, and the same windows gave shifts 1e-7 px apart from one
    # call to the next in one process; everything downstream (the warp, the radiometry, the
    # detections) followed
    refined = tuple(round(v, SHIFT_DECIMALS) for v in refined)
    return Shift(refined[0], refined[1], round(float(quality), 4),
                 "phase-correlation consensus + tile refinement", round(spread, 4), tuple(results),
                 round(local_spread, 4))


def _measured(window, *, band: int | None, refine_iterations: int):
    """One of :func:`estimate_shift`'s windows: both luminances (invalid pixels filled), its
    valid pixels and :func:`window_shift` (dx, dy, peak); None when flat."""
    _, before, after, valid = window
    ref = _fill_invalid(to_luminance(before, band), valid)
    mov = _fill_invalid(to_luminance(after, band), valid)
    if float(ref.std()) < 1e-6 or float(mov.std()) < 1e-6:
        return None  # flat window (all cloud, water or fill): nothing to match
    return (ref, mov, valid), window_shift(ref, mov, refine_iterations=refine_iterations)


def _map(fn, items: list, workers: int) -> list:
    """``[fn(item) for item in items]``, on ``workers`` threads when there are several (each
    OpenCV call then on one thread: the windows run side by side instead)."""
    if workers <= 1 or len(items) < 2:
        return [fn(item) for item in items]
    with one_opencv_thread(), ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def refine_shift(windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dx: float, dy: float,
                 *, tile_px: int = 64, iterations: int = 2) -> tuple[float, float]:
    """Refine a shift by the median residual of many small tiles.

    Each window's AFTER is resampled by the running estimate; each fully valid ``tile_px`` tile
    then gives a residual shift by phase correlation, unbiased near zero. Tiles crossing a
    shadow that moved with the sun, or a changed object, are outvoted by the tiles of plain
    ground: the median of hundreds of tiles reached 0.03 px on synthetic scenes where single
    windows erred by 0.1 to 0.5 px.

    Parameters
    ----------
    windows : list of (before, after, valid)
        Luminance of the consensus' inlier windows, (M, N) each, and their validity.
    dx, dy : float
        The consensus shift, pixels.
    """
    coefficients: list[dict[int, np.ndarray]] = [{} for _ in windows]
    for _ in range(iterations):
        residuals = []
        for (before, after, valid), cache in zip(windows, coefficients):
            moved = _translate(after, dx, dy, coefficients=cache)
            pad = int(math.ceil(max(abs(dx), abs(dy)))) + 2
            h, w = before.shape
            for r in range(pad, h - pad - tile_px + 1, tile_px):
                for c in range(pad, w - pad - tile_px + 1, tile_px):
                    if not valid[r:r + tile_px, c:c + tile_px].all():
                        continue
                    ref = before[r:r + tile_px, c:c + tile_px]
                    if float(ref.std()) < 1e-6:
                        continue
                    rdx, rdy, _ = _phase_correlate(ref, moved[r:r + tile_px, c:c + tile_px])
                    if abs(rdx) < 2 and abs(rdy) < 2:
                        residuals.append((rdx, rdy))
        if len(residuals) < 5:
            break
        rdx, rdy = np.median(np.asarray(residuals), axis=0)
        dx, dy = dx + float(rdx), dy + float(rdy)
        if abs(rdx) < 0.005 and abs(rdy) < 0.005:
            break
    return dx, dy


@dataclass(frozen=True)
class ShiftField:
    """A smooth field of AFTER's displacement over the BEFORE grid (local co-registration).

    Nodes lie at ``cols_px`` x ``rows_px``; ``dx_px``/``dy_px`` (ny, nx) hold the smoothed
    displacement, ``measured`` marks the nodes whose own window gave an accepted measurement.
    Calling the field with arrays of columns and rows interpolates it bilinearly (constant
    beyond the outer nodes).
    """

    cols_px: np.ndarray
    rows_px: np.ndarray
    dx_px: np.ndarray
    dy_px: np.ndarray
    measured: np.ndarray
    raw_dx_px: np.ndarray
    raw_dy_px: np.ndarray

    def __call__(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fc = np.interp(cols, self.cols_px, np.arange(self.cols_px.size)).astype(np.float32)
        fr = np.interp(rows, self.rows_px, np.arange(self.rows_px.size)).astype(np.float32)
        out = []
        for values in (self.dx_px, self.dy_px):
            if values.size == 1:
                out.append(np.full(np.shape(cols), float(values.flat[0]), np.float32))
                continue
            out.append(cv2.remap(values.astype(np.float32), fc, fr, cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE) if fc.ndim == 2 else
                       ndimage.map_coordinates(values, [fr, fc], order=1, mode="nearest"))
        return out[0], out[1]

    def summary(self, k: int = 1) -> dict:
        """report.json's ``local``; in pixels ``k`` times smaller than the field's (the files'
        own, when it was measured on pixels averaged by ``processing.pixel_m``)."""
        m = self.measured
        dx, dy = self.dx_px * k, self.dy_px * k

        def stats(v):
            return {"min": round(float(v.min()), 3), "max": round(float(v.max()), 3),
                    "mean": round(float(v.mean()), 3), "std": round(float(v.std()), 3)}

        return {
            "nodes": int(m.size), "measured": int(m.sum()),
            "grid_cols_px": [round(float(c), 1) for c in input_px(self.cols_px, k)],
            "grid_rows_px": [round(float(r), 1) for r in input_px(self.rows_px, k)],
            "dx_px": stats(dx), "dy_px": stats(dy),
            "field_dx_px": np.round(dx, 3).tolist(),
            "field_dy_px": np.round(dy, 3).tolist(),
            "measured_mask": m.astype(int).tolist(),
        }


def estimate_field(windows: list[tuple[tuple[float, float], np.ndarray, np.ndarray, np.ndarray]],
                   cols_px: np.ndarray, rows_px: np.ndarray, global_shift: tuple[float, float], *,
                   max_deviation_px: float = 3.0, min_peak: float = 0.05,
                   neighbour_tolerance_px: float = 0.5, band: int | None = None) -> ShiftField:
    """A shift field from windows centred on the nodes of a regular grid.

    Parameters
    ----------
    windows : list of ((col_px, row_px), before, after, valid)
        One window per node that has enough valid pixels; AFTER on the BEFORE grid without
        any shift applied.
    cols_px, rows_px : (nx,), (ny,) ndarray
        Node positions on the BEFORE grid.
    global_shift : (dx_px, dy_px)
        The global consensus, the starting point of every window and the fallback.
    max_deviation_px : float
        Nodes whose shift differs from the global one by more are rejected.
    min_peak : float
        Nodes whose correlation peak is weaker are rejected.
    neighbour_tolerance_px : float
        Nodes that differ from the median of their measured neighbours by more are rejected.

    Notes
    -----
    Nodes that disagree with their neighbours are rejected; they and the unmeasured nodes take
    the median of their measured neighbours (or the global shift), and the field is smoothed by
    a Gaussian of half a node: relief and building lean vary smoothly, a window fooled by a
    moving shadow does not. This is the
    tie-point filtering of AROSICS (Scheffler et al. 2017) with a smooth field in place of its
    affine fit.
    """
    gdx, gdy = global_shift
    raw_dx, raw_dy = _node_shifts(windows, cols_px, rows_px, global_shift,
                                  max_deviation_px=max_deviation_px, min_peak=min_peak, band=band)
    keep = _agrees_with_neighbours(raw_dx, raw_dy, neighbour_tolerance_px)
    dx = _filled(np.where(keep, raw_dx, np.nan), gdx)
    dy = _filled(np.where(keep, raw_dy, np.nan), gdy)
    # light smoothing: outliers are gone already, and a heavier one flattens real gradients
    dx = ndimage.gaussian_filter(dx, 0.5, mode="nearest").round(SHIFT_DECIMALS)
    dy = ndimage.gaussian_filter(dy, 0.5, mode="nearest").round(SHIFT_DECIMALS)
    return ShiftField(np.asarray(cols_px, float), np.asarray(rows_px, float), dx, dy, keep,
                      raw_dx, raw_dy)


def _node_shifts(windows: list[tuple[tuple[float, float], np.ndarray, np.ndarray, np.ndarray]],
                 cols_px: np.ndarray, rows_px: np.ndarray, global_shift: tuple[float, float], *,
                 max_deviation_px: float, min_peak: float, band: int | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each node's own shift (dx, dy), (ny, nx) each, NaN where its window is missing, flat,
    too weak (``min_peak``) or too far from ``global_shift`` (``max_deviation_px``).

    AFTER is first moved by the global shift: the window measures the residual near zero.
    """
    gdx, gdy = global_shift
    ny, nx = rows_px.size, cols_px.size
    raw_dx = np.full((ny, nx), np.nan)
    raw_dy = np.full((ny, nx), np.nan)
    col_index = {round(float(c), 3): i for i, c in enumerate(cols_px)}
    row_index = {round(float(r), 3): j for j, r in enumerate(rows_px)}
    for (col, row), before, after, valid in windows:
        i, j = col_index.get(round(float(col), 3)), row_index.get(round(float(row), 3))
        if i is None or j is None:
            continue
        ref = _fill_invalid(to_luminance(before, band), valid)
        mov = _fill_invalid(to_luminance(after, band), valid)
        if float(ref.std()) < 1e-6 or float(mov.std()) < 1e-6:
            continue
        rdx, rdy, peak = window_shift(ref, _translate(mov, gdx, gdy), refine_iterations=2)
        if peak < min_peak or math.hypot(rdx, rdy) > max_deviation_px:
            continue
        raw_dx[j, i], raw_dy[j, i] = gdx + rdx, gdy + rdy
    return raw_dx, raw_dy


def _agrees_with_neighbours(raw_dx: np.ndarray, raw_dy: np.ndarray, tolerance_px: float
                            ) -> np.ndarray:
    """(ny, nx) bool: measured nodes within ``tolerance_px`` of the median of their measured
    neighbours (those with fewer than two measured neighbours are kept)."""
    measured = np.isfinite(raw_dx)
    ny, nx = measured.shape
    keep = measured.copy()
    for j in range(ny):
        for i in range(nx):
            if not measured[j, i]:
                continue
            sl = (slice(max(0, j - 1), j + 2), slice(max(0, i - 1), i + 2))
            nb = measured[sl].copy()
            nb[min(j, 1), min(i, 1)] = False
            if nb.sum() >= 2:
                mdx = np.median(raw_dx[sl][nb])
                mdy = np.median(raw_dy[sl][nb])
                if math.hypot(raw_dx[j, i] - mdx, raw_dy[j, i] - mdy) > tolerance_px:
                    keep[j, i] = False
    return keep


def _filled(values: np.ndarray, fallback: float) -> np.ndarray:
    """``values`` (ny, nx) with its NaN nodes filled, in place, by the median of their filled
    neighbours, ring after ring; ``fallback`` where none is ever reached."""
    ny, nx = values.shape
    for _ in range(max(nx, ny)):
        missing = ~np.isfinite(values)
        if not missing.any():
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods
            filled = ndimage.generic_filter(values, np.nanmedian, size=3, mode="nearest")
        values[missing] = filled[missing]
    values[~np.isfinite(values)] = fallback
    return values
