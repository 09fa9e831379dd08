"""Differencing: a per-pixel change score in noise units and the cleaned change mask.

The score tolerates a residual misregistration of ``tolerance_px``: a pixel only counts as changed
when its value lies outside the range of the other image's neighbourhood, in both directions.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .config import DifferenceConfig


def _disk(radius_px: float) -> np.ndarray | None:
    r = int(round(radius_px))
    if r < 1:
        return None
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _smooth(band: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return band
    return cv2.GaussianBlur(band, (0, 0), sigma_px)


def _interval_distance(x: np.ndarray, ref: np.ndarray, kernel: np.ndarray | None) -> np.ndarray:
    """How far ``x`` lies outside the range of ``ref`` over the kernel's neighbourhood."""
    if kernel is None:
        return np.abs(x - ref)
    lo = cv2.erode(ref, kernel)
    hi = cv2.dilate(ref, kernel)
    return np.maximum(np.maximum(x - hi, lo - x), 0)


def change_score(before: np.ndarray, after: np.ndarray, valid: np.ndarray, sigma: np.ndarray, *,
                 smoothing_px: float = 0.8, tolerance_px: int = 1) -> np.ndarray:
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
    for b in range(before.shape[0]):
        sb = _smooth(before[b], smoothing_px)
        sa = _smooth(after[b], smoothing_px)
        d = np.maximum(_interval_distance(sa, sb, kernel), _interval_distance(sb, sa, kernel))
        acc += (d / float(sigma[b])) ** 2
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
    ``blue_band``, when the image has that many bands) grows by at least ``min_blue_gain``. A dark
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


def shadow_change(before: np.ndarray, after: np.ndarray, *, min_correlation: float = 0.5,
                  window_px: int = 9) -> np.ndarray:
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
                shadow: np.ndarray | None = None) -> np.ndarray:
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
    """
    seeds = (score > cfg.threshold_sigma).astype(np.uint8)
    grow_k = _disk(cfg.grow_m / res_m)
    if grow_k is not None:
        seeds = cv2.dilate(seeds, grow_k)
    mask = seeds & (score > cfg.low_threshold_sigma).astype(np.uint8)
    close_k = _disk(cfg.closing_m / res_m)
    if close_k is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, close_k)
    if shadow is not None:
        mask &= ~shadow.astype(np.uint8) & 1
    open_k = _disk(cfg.opening_m / res_m)
    if open_k is not None:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, open_k)
    border = max(cfg.nodata_margin_px, int(math.ceil(2 * cfg.smoothing_px + cfg.tolerance_px)))
    core_valid = valid.astype(np.uint8)
    if border > 0:
        core_valid = cv2.erode(core_valid, np.ones((2 * border + 1, 2 * border + 1), np.uint8),
                               borderType=cv2.BORDER_REPLICATE)
    return (mask & core_valid).astype(bool)


def mask_reach_px(cfg: DifferenceConfig, res_m: float) -> int:
    """How far (pixels) the value of one mask pixel depends on its neighbours' inputs."""
    r = lambda m: int(round(m / res_m))  # noqa: E731
    return (int(math.ceil(3 * cfg.smoothing_px)) + cfg.tolerance_px + r(cfg.grow_m) + 5
            + 2 * r(cfg.closing_m) + 2 * r(cfg.opening_m)
            + max(cfg.nodata_margin_px, int(math.ceil(2 * cfg.smoothing_px + cfg.tolerance_px))) + 2)
