"""The co-registration stage of a pair: where to measure, the global shift, the optional local
field, and whether the pair may go on (:func:`register` -> :class:`Registration`).

The measuring itself (phase correlation of gradients, consensus, quality) is
:mod:`pipeline.coreg.shift`, and on the ground plane, when the windows disagree,
:mod:`pipeline.coreg.ground`; applying the result is reading AFTER through
:class:`~pipeline.io.warp.AfterOnGrid` with :attr:`Registration.offset`.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from .. import io as rio
from ..config import Config
from ..errors import RegistrationError, UnregisteredWarning
from ..io.scene import Scene, Validity
from .ground import GroundFit, estimate_ground_shift
from .shift import Shift, ShiftField, estimate_field, estimate_shift

log = logging.getLogger(__name__)

UNREGISTERED = "none (unregistered)"  # Shift.method of a pair that went on without a shift


@dataclass(frozen=True)
class Registration:
    """How AFTER is put on the BEFORE grid.

    Attributes
    ----------
    shift : Shift or None
        The global shift as measured (zero, method :data:`UNREGISTERED`, when the pair goes on
        without one; None when co-registration is off or no window could be measured).
    field : ShiftField or None
        The local shift field (``coregistration.mode: local``).
    windows : list of Window
        The matching windows on the BEFORE grid (the radiometry is fitted on them too).
    allow_unregistered : bool
        Whether the pair was allowed to go on without a reliable shift.
    ground : GroundFit or None
        The ground-plane measurement (``coregistration.ground``); None when it is off or no
        small window could be measured.
    reason : str
        Why the shift is the ground's (or why none could be used); "" when the windows'
        consensus was used as it is.
    """

    shift: Shift | None
    field: ShiftField | None
    windows: list[Window]
    allow_unregistered: bool = False
    ground: GroundFit | None = None
    reason: str = ""

    @property
    def offset(self):
        """What :class:`~pipeline.io.warp.AfterOnGrid` undoes: the field, else (dx, dy)."""
        if self.field is not None:
            return self.field
        s = self.shift
        return (s.dx_px, s.dy_px) if s is not None else (0.0, 0.0)

    @property
    def mode(self) -> str:
        """``local`` with a shift field, else ``global``."""
        return "local" if self.field is not None else "global"


def sample_windows(valid_lr: np.ndarray, factor: int, grid: rio.Grid, *, window_px: int,
                   grid_n: int, min_valid_fraction: float) -> list[Window]:
    """Matching windows spread over the valid overlap, chosen on a decimated validity mask.

    Tries a ``grid_n`` x ``grid_n`` lattice first, then denser lattices and smaller windows
    until at least three windows are found (or none can be).
    """
    size = min(window_px, (min(grid.width, grid.height) // 32) * 32)
    rows, cols = np.nonzero(valid_lr)
    if size < 64 or rows.size == 0:
        return []
    r0, r1 = rows.min() * factor, (rows.max() + 1) * factor
    c0, c1 = cols.min() * factor, (cols.max() + 1) * factor
    best: list[Window] = []
    n = grid_n
    while size >= 64:
        found = []
        for cy in np.linspace(r0 + size / 2, r1 - size / 2, n) if r1 - r0 > size else [(r0 + r1) / 2]:
            for cx in np.linspace(c0 + size / 2, c1 - size / 2, n) if c1 - c0 > size else [(c0 + c1) / 2]:
                col = int(np.clip(round(cx - size / 2), 0, grid.width - size))
                row = int(np.clip(round(cy - size / 2), 0, grid.height - size))
                sub = valid_lr[row // factor:(row + size) // factor, col // factor:(col + size) // factor]
                if sub.size and sub.mean() >= min_valid_fraction:
                    found.append(Window(col, row, size, size))
        found = list(dict.fromkeys(found))
        if len(found) > len(best):
            best = found
        if len(best) >= 3:
            break
        n *= 2
        size //= 2
    return best


def matching_windows(scene: Scene, config: Config) -> list[Window]:
    """:func:`sample_windows` over the scene's joint validity, as the config asks."""
    cfg = config.coregistration
    v = scene.validity
    return sample_windows(v.joint, v.factor, scene.grid, window_px=cfg.window_px,
                          grid_n=cfg.grid, min_valid_fraction=cfg.min_valid_fraction)


def measure_shift(scene: Scene, windows: list[Window], config: Config) -> Shift | None:
    """The global shift of AFTER (reprojected, not yet shifted) in ``windows``; None when
    there are none."""
    cfg = config.coregistration
    nodata = scene.nodata
    samples = []
    with rio.AfterOnGrid(scene.a_ds, scene.grid, nodata=nodata) as a0:
        a_bands = list(range(1, a0.count + 1))
        for w in windows:
            b, vb = rio.read_window(scene.b_ds, w, nodata=nodata)
            a, va = rio.read_window(a0, w, bands=a_bands, nodata=nodata)
            centre = (w.col_off + w.width / 2, w.row_off + w.height / 2)
            samples.append((centre, b, a, vb & va))
    band = config.input.band
    return estimate_shift(samples, max_shift_px=cfg.max_shift_px,
                          inlier_tolerance_px=cfg.inlier_tolerance_px,
                          agreement_px=cfg.agreement_px, refine_iterations=cfg.refine_iterations,
                          band=band if band and band <= min(len(s[1]) for s in samples) else None,
                          workers=config.processing.threads or os.cpu_count() or 1
                          ) if samples else None


def overlap_centre_px(validity: Validity) -> tuple[float, float]:
    """(col, row) of the centroid of the joint validity, BEFORE pixels."""
    rows, cols = np.nonzero(validity.joint)
    if not rows.size:
        return 0.0, 0.0
    f = validity.factor
    return float((cols.mean() + 0.5) * f), float((rows.mean() + 0.5) * f)


def ground_windows(scene: Scene, config: Config) -> list[Window]:
    """The small windows of the ground-plane measurement: :func:`sample_windows` on a
    ``ground_grid`` lattice of ``ground_window_px`` windows."""
    cfg = config.coregistration
    v = scene.validity
    return sample_windows(v.joint, v.factor, scene.grid, window_px=cfg.ground_window_px,
                          grid_n=cfg.ground_grid, min_valid_fraction=cfg.min_valid_fraction)


def measure_ground(scene: Scene, prior_px: tuple[float, float], config: Config) -> GroundFit | None:
    """The ground plane's shift of AFTER (:func:`~pipeline.coreg.ground.estimate_ground_shift`),
    measured in small windows around ``prior_px`` (rounded to whole pixels, so that AFTER is
    read without resampling); None when no window could be measured."""
    cfg = config.coregistration
    nodata = scene.nodata
    prior = (float(round(prior_px[0])), float(round(prior_px[1])))
    windows = ground_windows(scene, config)
    samples = []
    with rio.AfterOnGrid(scene.a_ds, scene.grid, shift_px=prior, nodata=nodata) as a0:
        a_bands = list(range(1, a0.count + 1))
        for w in windows:
            b, vb = rio.read_window(scene.b_ds, w, nodata=nodata)
            a, va = rio.read_window(a0, w, bands=a_bands, nodata=nodata)
            samples.append(((w.col_off + w.width / 2, w.row_off + w.height / 2), b, a, vb & va))
    if not samples:
        return None
    band = config.input.band
    return estimate_ground_shift(
        samples, prior, overlap_centre_px(scene.validity), window_px=cfg.ground_window_px,
        tolerance_px=cfg.ground_tolerance_px, max_shift_px=cfg.max_shift_px,
        min_windows=cfg.ground_min_windows, min_share=cfg.ground_min_share,
        max_slope=cfg.ground_max_slope, refine_iterations=min(cfg.refine_iterations, 2),
        band=band if band and band <= min(len(s[1]) for s in samples) else None)


def _field_windows(grid: rio.Grid, validity: Validity, config: Config):
    """(windows, node columns, node rows) of the local field: a window per node of a regular
    grid, where enough of it is valid in both."""
    cfg = config.coregistration
    spacing = max(cfg.local_grid_px, math.ceil(max(grid.width, grid.height) / cfg.local_max_nodes))
    half = min(cfg.local_window_px, spacing * 2) // 2
    cols = np.arange(spacing / 2, grid.width, spacing)
    rows = np.arange(spacing / 2, grid.height, spacing)
    joint, factor = validity.joint, validity.factor
    windows = []
    for r in rows:
        for c in cols:
            w = Window(int(c) - half, int(r) - half, 2 * half, 2 * half)
            w = w.intersection(Window(0, 0, grid.width, grid.height))
            sub = joint[int(w.row_off) // factor:int(w.row_off + w.height) // factor + 1,
                        int(w.col_off) // factor:int(w.col_off + w.width) // factor + 1]
            if w.width < 64 or w.height < 64 or not sub.size or sub.mean() < cfg.min_valid_fraction:
                continue
            windows.append(((float(c), float(r)), w))
    return windows, cols, rows


def measure_field(scene: Scene, global_shift: tuple[float, float], config: Config) -> ShiftField:
    """Local co-registration: a shift field from windows on a regular grid of nodes."""
    cfg = config.coregistration
    nodata = scene.nodata
    windows, cols, rows = _field_windows(scene.grid, scene.validity, config)
    samples = []
    with rio.AfterOnGrid(scene.a_ds, scene.grid, nodata=nodata) as a0:
        for centre, w in windows:
            b, vb = rio.read_window(scene.b_ds, w, nodata=nodata)
            a, va = rio.read_window(a0, w)
            samples.append((centre, b, a, vb & va))
    return estimate_field(samples, cols, rows, global_shift,
                          max_deviation_px=cfg.local_max_deviation_px,
                          neighbour_tolerance_px=cfg.inlier_tolerance_px)


def _consensus_holds(shift: Shift | None, config: Config) -> bool:
    """The windows' consensus may be used as it is: strong enough (``min_quality``), and most
    windows agree with it within ``inlier_tolerance_px`` (one shift fits the scene)."""
    return (shift is not None and shift.quality >= config.coregistration.min_quality
            and 2 * shift.n_inliers >= len(shift.windows))


def _consensus_weakness(shift: Shift | None, config: Config) -> str:
    """Why the windows' consensus is not used as it is, in words."""
    cfg = config.coregistration
    if shift is None:
        return ("no window with enough valid, textured pixels in both images matched within "
                f"max_shift_px ({cfg.max_shift_px:g} px)")
    if shift.quality < cfg.min_quality:
        return (f"windows disagree or match weakly (quality {shift.quality:.2f} < "
                f"min_quality {cfg.min_quality})")
    return (f"only {shift.n_inliers} of {len(shift.windows)} windows agree within "
            f"{cfg.inlier_tolerance_px:g} px (quality {shift.quality:.2f})")


def _prior(shift: Shift | None, max_shift_px: float) -> tuple[float, float]:
    """Where the ground-plane windows start: the median of the windows' shifts in range."""
    if shift is None:
        return 0.0, 0.0
    near = [(w.dx_px, w.dy_px) for w in shift.windows if math.hypot(w.dx_px, w.dy_px) <= max_shift_px]
    if not near:
        return 0.0, 0.0
    dx, dy = np.median(np.asarray(near), axis=0)
    return float(dx), float(dy)


def choose_shift(consensus: Shift | None, ground: GroundFit | None, config: Config
                 ) -> tuple[Shift | None, str, bool]:
    """Which shift the pair goes on with: (shift, reason, usable).

    1. The windows' consensus when it holds (most windows agree, quality ``min_quality``) and
       the ground plane, when measured, agrees with it within ``ground_tolerance_px``
       (reason "").
    2. Else the ground plane's shift when it holds: the consensus was weak or split, or tall
       structures pulled every window alike and it lies off the ground.
    3. Else the consensus when its quality reaches ``min_quality`` (as without the ground
       plane), the reason saying that the ground plane did not hold.
    4. Else the consensus, ``usable`` False, the reason saying why.
    """
    cfg = config.coregistration
    holds = _consensus_holds(consensus, config)
    if ground is not None and ground.holds:
        off = math.inf if consensus is None else math.hypot(consensus.dx_px - ground.shift.dx_px,
                                                            consensus.dy_px - ground.shift.dy_px)
        if holds and off <= cfg.ground_tolerance_px:
            return consensus, "", True
        weak = (f"the windows' consensus lies {off:.1f} px off the ground plane (tall structures "
                "pull the windows)" if holds else _consensus_weakness(consensus, config))
        return ground.shift, (f"{weak}; the ground plane holds: {ground.n_ground} of "
                              f"{ground.n_measured} matching small windows agree on it"), True
    if holds:
        return consensus, ("" if ground is None else
                           f"the ground plane does not hold ({ground.why}); the windows' "
                           "consensus is used"), True
    weak = _consensus_weakness(consensus, config)
    if cfg.ground:
        weak += ("; ground plane: " + ground.why if ground is not None else
                 "; ground plane: no small window could be measured")
    if consensus is not None and consensus.quality >= cfg.min_quality:
        return consensus, f"{weak}; the windows' consensus is used", True
    return consensus, weak, False


def _accepted(shift: Shift | None, usable: bool, why: str, scene: Scene, *,
              allow_unregistered: bool) -> Shift | None:
    """``shift`` when it may be used; a zero shift (or None) when it may not and the caller
    allows going on unregistered (an :class:`UnregisteredWarning`); else RegistrationError."""
    if usable:
        return shift
    if not allow_unregistered:
        raise RegistrationError(f"{scene.after}: co-registration failed: {why}; use "
                                "--allow-unregistered to go on with the reprojection alone",
                                path=scene.after)
    warnings.warn(f"{scene.after}: co-registration failed ({why}); going on unregistered",
                  UnregisteredWarning, stacklevel=2)
    return None if shift is None else Shift(0.0, 0.0, shift.quality, UNREGISTERED, 0.0,
                                            shift.windows)


def register(scene: Scene, config: Config, *, allow_unregistered: bool = False) -> Registration:
    """Measure how AFTER lies on the BEFORE grid.

    The windows' consensus (:func:`measure_shift`) is used when its quality reaches
    ``min_quality``. Where tall structures seen from other angles lean differently, the windows
    disagree or match weakly; the ground plane, measured in many small windows
    (:func:`measure_ground`), is then used when enough of them agree on it
    (:func:`choose_shift`). The pair is refused only when neither holds. With
    ``ground_first`` the ground plane is measured on every pair and also overrules a consensus
    that is split or lies off it.

    Parameters
    ----------
    scene : Scene
    config : Config
        ``coregistration``: on or off, global or local, windows, ground plane, thresholds.
    allow_unregistered : bool
        Go on with the reprojection alone when no reliable shift can be measured.

    Raises
    ------
    RegistrationError
        The shift could not be measured reliably and ``allow_unregistered`` is False.
    """
    cfg = config.coregistration
    windows = matching_windows(scene, config)
    shift, ground, reason = None, None, ""
    if cfg.enabled:
        consensus = measure_shift(scene, windows, config)
        weak = consensus is None or consensus.quality < cfg.min_quality
        if cfg.ground and (cfg.ground_first or weak):
            ground = measure_ground(scene, _prior(consensus, cfg.max_shift_px), config)
        if cfg.ground_first or weak:
            shift, reason, usable = choose_shift(consensus, ground, config)
        else:  # the windows' consensus passes the gate: as without the ground plane
            shift, reason, usable = consensus, "", True
        shift = _accepted(shift, usable, reason, scene, allow_unregistered=allow_unregistered)
    if shift is not None:
        log.info("shift of AFTER: dx=%.3f px dy=%.3f px quality=%.2f (%s)", shift.dx_px,
                 shift.dy_px, shift.quality, shift.method)
    if reason:
        log.info("co-registration: %s", reason)
    field = None
    if shift is not None and shift.method != UNREGISTERED and cfg.mode == "local":
        field = measure_field(scene, (shift.dx_px, shift.dy_px), config)
        log.info("local shift field: %d of %d nodes measured", int(field.measured.sum()),
                 field.measured.size)
    return Registration(shift, field, windows, allow_unregistered, ground, reason)
