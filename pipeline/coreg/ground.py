"""Co-registration on the ground plane, for pairs seen from other viewing angles.

The consensus of a few large windows (:func:`pipeline.coreg.shift.estimate_shift`) splits when
tall terminals lean differently in the two images (parallax), shadows moved and aprons changed:
each window is pulled by its own structures. Here many small windows measure their own shift;
the ground is the smooth displacement most of them agree on (markings, joints, pavement edges,
parked aircraft), and windows pulled by tall structures fall out as outliers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .shift import (
    SHIFT_DECIMALS,
    Shift,
    WindowShift,
    _fill_invalid,
    to_luminance,
    window_shift,
)

#: Shift.method of a shift measured on the ground plane
GROUND_METHOD = "ground-plane consensus of small windows"

#: hypotheses drawn from triples of windows (a fixed seed: the same pair gives the same fit)
_AFFINE_DRAWS = 400

#: an affine ground model must hold this many times the windows the best translation holds...
_CLEARLY_MORE = 1.3
#: ...and keep this share of them: a drift keeps them all, a ramp from the ground on one side
#: to the roofs on the other loses the ground between the roofs
_KEEPS = 0.9


@dataclass(frozen=True)
class GroundFit:
    """The ground's displacement as a smooth function of position, and how well it holds.

    Attributes
    ----------
    shift : Shift
        The displacement at ``centre_px`` (method :data:`GROUND_METHOD`); its windows are the
        small windows that gave a measurement, ``inlier`` where they lie on the ground.
    centre_px : (col, row)
        Where the shift is taken: the centre of the overlap, BEFORE pixels.
    slope : ndarray, shape (2, 2)
        d(dx, dy) / d(col, row): how the ground's displacement drifts across the scene (relief,
        viewing geometry), pixels per pixel; zero when one translation fits.
    n_windows, n_measured, n_ground : int
        Small windows read; those whose correlation peak was strong enough; those on the ground.
    trend_px : float
        Largest distance, over the ground windows, between the model and the shift: how far one
        translation misses the ground at the scene's edges.
    holds : bool
        Enough windows agree (``min_windows`` and ``min_share`` of the measured ones).
    why : str
        Why it does not hold ("" when it does).
    """

    shift: Shift
    centre_px: tuple[float, float]
    slope: np.ndarray
    n_windows: int
    n_measured: int
    n_ground: int
    trend_px: float
    holds: bool
    why: str = ""

    def summary(self) -> dict:
        """The ``coregistration.ground`` member of report.json."""
        return {
            "windows": self.n_windows, "measured": self.n_measured, "used": self.n_ground,
            "rejected": self.n_measured - self.n_ground,
            "shift_x_px": round(self.shift.dx_px, 4), "shift_y_px": round(self.shift.dy_px, 4),
            "quality": self.shift.quality, "spread_px": self.shift.spread_px,
            "centre_px": [round(float(c), 1) for c in self.centre_px],
            "slope": np.round(self.slope, 6).tolist(), "trend_px": round(self.trend_px, 3),
            "holds": self.holds, **({"why": self.why} if self.why else {}),
        }


def _design(points: np.ndarray, columns: list[int]) -> np.ndarray:
    """[1, x, y] (the chosen columns) of centred, scaled window positions."""
    full = np.column_stack([np.ones(len(points)), points])
    return full[:, columns]


def _fit(points: np.ndarray, shifts: np.ndarray, weights: np.ndarray, columns: list[int]
         ) -> np.ndarray:
    """Weighted least squares of shifts (n, 2) on the design's columns: (3, 2) coefficients,
    zero for the columns left out."""
    a = _design(points, columns) * weights[:, None]
    coef, *_ = np.linalg.lstsq(a, shifts * weights[:, None], rcond=None)
    out = np.zeros((3, 2))
    out[columns] = coef
    return out


def _predict(points: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return _design(points, [0, 1, 2]) @ coef


def _refined(points: np.ndarray, shifts: np.ndarray, peaks: np.ndarray, coef: np.ndarray, *,
             tolerance_px: float, columns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``coef`` refined by least squares on the windows within ``tolerance_px`` of it, until
    they no longer change: (coefficients, inlier mask)."""
    inl = np.hypot(*(shifts - _predict(points, coef)).T) <= tolerance_px
    for _ in range(5):
        if inl.sum() < len(columns) + 1:
            break
        coef = _fit(points[inl], shifts[inl], np.sqrt(peaks[inl]), columns)
        new = np.hypot(*(shifts - _predict(points, coef)).T) <= tolerance_px
        if (new == inl).all():
            break
        inl = new
    return coef, inl


def _most_inliers(points, shifts, peaks, hypotheses, tolerance_px) -> np.ndarray:
    """The hypothesis most windows lie within ``tolerance_px`` of (ties: stronger peaks)."""
    best, best_score = hypotheses[0], -1.0
    for coef in hypotheses:
        inl = np.hypot(*(shifts - _predict(points, coef)).T) <= tolerance_px
        score = inl.sum() + 1e-3 * peaks[inl].sum()
        if score > best_score:
            best, best_score = coef, score
    return best


def _best_model(points: np.ndarray, shifts: np.ndarray, peaks: np.ndarray, *, tolerance_px: float,
                columns: list[int], max_slope: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The ground's model: (coefficients (3, 2), inlier mask).

    RANSAC (Fischler & Bolles 1981) finds the translation most windows lie within
    ``tolerance_px`` of (one hypothesis a window), and the affine model (three windows a
    hypothesis, slope at most ``max_slope``); each is refined by least squares on its windows.
    The affine model is kept only when it holds clearly more windows than the translation
    and keeps nearly all of the translation's: a ramp from the ground on one side to the roofs
    of a terminal on the other also holds many windows, but loses the ground between the
    roofs, and the translation is then the safer guess.
    """
    n = len(shifts)
    translations = [np.vstack([s, np.zeros((2, 2))]) for s in shifts]
    coef_t, inl_t = _refined(points, shifts, peaks,
                             _most_inliers(points, shifts, peaks, translations, tolerance_px),
                             tolerance_px=tolerance_px, columns=[0])
    if len(columns) == 1 or n < 6:
        return coef_t, inl_t
    rng = np.random.default_rng(0)
    affine = []
    for _ in range(_AFFINE_DRAWS):
        pick = rng.choice(n, size=len(columns), replace=False)
        a = _design(points[pick], columns)
        if abs(np.linalg.det(a.T @ a)) < 1e-6:
            continue
        coef = np.zeros((3, 2))
        coef[columns] = np.linalg.lstsq(a, shifts[pick], rcond=None)[0]
        if np.abs(coef[1:]).max() <= max_slope * scale:
            affine.append(coef)
    if not affine:
        return coef_t, inl_t
    coef_a, inl_a = _refined(points, shifts, peaks,
                             _most_inliers(points, shifts, peaks, affine, tolerance_px),
                             tolerance_px=tolerance_px, columns=columns)
    if (np.abs(coef_a[1:]).max() > max_slope * scale or inl_a.sum() < _CLEARLY_MORE * inl_t.sum()
            or (inl_a & inl_t).sum() < _KEEPS * inl_t.sum()):
        return coef_t, inl_t
    return coef_a, inl_a


def _ground_model(measured: list[WindowShift], centre_px: tuple[float, float], *, window_px: int,
                  tolerance_px: float, max_slope: float):
    """:func:`_best_model` of the measured windows: (coefficients (3, 2) on positions centred
    on ``centre_px`` and divided by the scale, the model at each window (n, 2), the ground's
    windows (n,) bool, the scale)."""
    pos = np.array([[r.col_px, r.row_px] for r in measured])
    shifts = np.array([[r.dx_px, r.dy_px] for r in measured])
    peaks = np.array([r.peak for r in measured])
    # positions scaled to about 1, so that the slope terms and the constant are of one size in
    # the fit; the slope is fitted along an axis only where the windows spread over more than
    # one window (not along a narrow strip of overlap)
    scale = max(float(np.ptp(pos[:, 0])), float(np.ptp(pos[:, 1])), 1.0) / 2
    points = (pos - np.asarray(centre_px)) / scale
    columns = [0] + [k + 1 for k in (0, 1) if pos[:, k].std() > window_px]
    coef, ground = _best_model(points, shifts, peaks, tolerance_px=tolerance_px,
                               columns=columns, max_slope=max_slope, scale=scale)
    return coef, _predict(points, coef), ground, scale


def _window_shifts(windows, prior_px: tuple[float, float], *, refine_iterations: int,
                   band: int | None) -> list[WindowShift]:
    """Each textured window's shift (``prior_px`` plus its residual), none on the ground yet."""
    px, py = prior_px
    results = []
    for (col, row), before, after, valid in windows:
        ref = _fill_invalid(to_luminance(before, band), valid)
        mov = _fill_invalid(to_luminance(after, band), valid)
        if float(ref.std()) < 1e-6 or float(mov.std()) < 1e-6:
            continue  # flat (all cloud, water or fill): nothing to match
        rdx, rdy, peak = window_shift(ref, mov, refine_iterations=refine_iterations)
        dx, dy = px + rdx, py + rdy
        if math.isfinite(dx) and math.isfinite(dy):
            results.append(WindowShift(col, row, dx, dy, peak, False))
    return results


def _quality(n_ground: int, n_measured: int, peak: float, spread_px: float, *,
             min_windows: int, tolerance_px: float) -> float:
    """0 to 1: the share of matching windows on the ground (counted in full from
    ``min_windows`` windows), their median peak's strength, and their spread."""
    if not n_ground:
        return 0.0
    share = n_ground / n_measured * min(1.0, n_ground / max(min_windows, 1))
    strength = 1.0 - math.exp(-float(peak) / 0.05)
    return share * strength * math.exp(-spread_px / max(tolerance_px, 1e-6))


def _why_not(n_ground: int, n_measured: int, *, min_windows: int, min_share: float) -> str:
    """Why the ground plane does not hold, in words; "" when it does."""
    if n_ground < min_windows:
        return (f"only {n_ground} of {n_measured} matching small windows agree on the ground "
                f"(fewer than {min_windows})")
    if n_ground < min_share * n_measured:
        return (f"only {n_ground} of {n_measured} matching small windows "
                f"({n_ground / n_measured:.0%}) agree on the ground (less than {min_share:.0%})")
    return ""


def estimate_ground_shift(windows: list[tuple[tuple[float, float], np.ndarray, np.ndarray, np.ndarray]],
                          prior_px: tuple[float, float], centre_px: tuple[float, float], *,
                          window_px: int, tolerance_px: float = 1.5, min_peak: float = 0.05,
                          max_shift_px: float = 32.0, min_windows: int = 12,
                          min_share: float = 0.2, max_slope: float = 0.01,
                          refine_iterations: int = 2, band: int | None = None
                          ) -> GroundFit | None:
    """The ground's displacement of AFTER relative to BEFORE from many small windows.

    Parameters
    ----------
    windows : list of ((col_px, row_px), before, after, valid)
        Small windows spread over the overlap: centre on the BEFORE grid, BEFORE (B, M, N),
        AFTER (B', M, N) already moved back by ``prior_px``, and the (M, N) mask where both are
        valid.
    prior_px : (dx, dy)
        The displacement AFTER was moved back by (a whole number of pixels, so that the
        windows are not resampled); each window measures its residual.
    centre_px : (col, row)
        Where the shift is taken: the centre of the overlap.
    window_px : int
        Side of the windows: the slope is fitted along an axis only where the windows spread
        over more than that.
    tolerance_px : float
        Windows within this distance of the model lie on the ground.
    min_peak, max_shift_px : float
        Windows with a weaker phase-correlation peak (flat pavement, water, unrelated content)
        or a larger shift measured nothing and are left out.
    min_windows, min_share : int, float
        The fit holds when at least ``min_windows`` windows, and ``min_share`` of the measured
        ones, lie on the ground.
    max_slope : float
        Largest drift of the displacement accepted, pixels per pixel.

    Returns
    -------
    GroundFit or None
        None when no window could be measured.

    Notes
    -----
    Each window's shift is phase correlation of gradient images with re-measurement after
    resampling (:func:`~pipeline.coreg.shift.window_shift`). The ground model, a constant or
    an affine function of position (relief and viewing geometry make the ground's displacement
    drift by a few pixels across a frame), is found by RANSAC (Fischler & Bolles 1981) over
    the windows and refined by least squares on those within ``tolerance_px``. A window on a
    tall structure is displaced by the structure's lean, away from the ground's, and windows of
    unrelated images scatter: neither forms a model that many windows share. The shift is the
    model at ``centre_px``, the mean displacement of the ground over the overlap.
    """
    results = _window_shifts(windows, prior_px, refine_iterations=refine_iterations, band=band)
    if not results:
        return None
    index = [i for i, r in enumerate(results)
             if r.peak >= min_peak and math.hypot(r.dx_px, r.dy_px) <= max_shift_px]
    measured = [results[i] for i in index]
    if not measured:
        shift = Shift(*prior_px, 0.0, GROUND_METHOD, 0.0, tuple(results), 0.0)
        return GroundFit(shift, centre_px, np.zeros((2, 2)), len(windows), 0, 0, 0.0, False,
                         "no small window matched")
    shifts = np.array([[r.dx_px, r.dy_px] for r in measured])
    peaks = np.array([r.peak for r in measured])
    coef, model, ground, scale = _ground_model(measured, centre_px, window_px=window_px,
                                               tolerance_px=tolerance_px, max_slope=max_slope)
    n_ground = int(ground.sum())
    dx, dy = (round(float(v), SHIFT_DECIMALS) for v in coef[0])  # as estimate_shift's
    spread = float(np.median(np.hypot(*(shifts - model)[ground].T))) if n_ground else 0.0
    trend = float(np.hypot(*(model[ground] - coef[0]).T).max()) if n_ground else 0.0
    quality = _quality(n_ground, len(measured), np.median(peaks[ground]) if n_ground else 0.0,
                       spread, min_windows=min_windows, tolerance_px=tolerance_px)
    why = _why_not(n_ground, len(measured), min_windows=min_windows, min_share=min_share)
    on_ground = np.zeros(len(results), bool)
    on_ground[index] = ground
    listed = tuple(WindowShift(r.col_px, r.row_px, r.dx_px, r.dy_px, r.peak, bool(g))
                   for r, g in zip(results, on_ground))
    shift = Shift(dx, dy, round(float(quality), 4), GROUND_METHOD, round(spread, 4), listed,
                  round(spread, 4))
    return GroundFit(shift, centre_px, coef[1:].T / scale, len(windows), len(measured), n_ground,
                     trend, not why, why)
