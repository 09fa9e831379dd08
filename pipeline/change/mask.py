"""Pass 1 of a pair: the cleaned change mask, block by block (:func:`mask_block`).

Each block is read with the mask's reach as margin (:func:`~pipeline.change.difference.mask_reach_px`),
so its core is exactly what a whole-array run gives.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from rasterio.windows import Window

from .. import io as rio
from ..config import Config
from ..io.scene import Scene
from ..timing import Stopwatch
from .difference import screened_change_mask
from .noise import NoiseModel
from .radiometry import comparable, normalise

#: called with each block's core as read: (core window, before, before valid, after, after
#: valid), e.g. to paste it into the report's overview pictures
BlockObserver = Callable[[Window, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]
#: called with each block as read, margin and all: ((core, padded) windows, before, before
#: valid, after, after valid, and the block's change mask, margin and all), e.g. to run the
#: aircraft detector
BlockSighter = Callable[[tuple[Window, Window], np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                         np.ndarray], None]


def mask_block(readers: tuple, windows: tuple[Window, Window], *, scene: Scene,
               noise: NoiseModel, config: Config, watch: Stopwatch,
               observe: BlockObserver | None = None,
               sight: BlockSighter | None = None, sight_reads_mask: bool = True
               ) -> tuple[np.ndarray, float]:
    """The cleaned change mask of one block's core: 0/1, 255 (nodata) where invalid; and how
    many of the block's pixels (margin included) the screen looked at closely.

    Parameters
    ----------
    readers : (BEFORE, AFTER on the grid)
        This thread's handles.
    windows : (core, padded) Window
        The block's core and the window read around it.
    scene, noise, config
        The pair, its noise model and the configuration.
    watch : Stopwatch
        Adds up the time spent reading and differencing.
    observe : callable, optional
        Sees each block's core as read (:data:`BlockObserver`).
    sight : callable, optional
        Sees each block as read, margin and all (:data:`BlockSighter`): the aircraft detector.
    sight_reads_mask : bool
        ``sight`` reads the block's change mask, margin included. When it does not (or there
        is no ``sight``), the mask's per-pixel work runs only as far around the core as the
        core's mask needs.
    """
    core, padded = windows
    with watch.stage("read"):
        b, vb, a, va = scene.read(readers, padded)
    r0 = int(core.row_off - padded.row_off)
    c0 = int(core.col_off - padded.col_off)
    sl = (slice(r0, r0 + int(core.height)), slice(c0, c0 + int(core.width)))
    if observe is not None:
        with watch.stage("report_images"):
            observe(core, b[(slice(None),) + sl], vb[sl], a[(slice(None),) + sl], va[sl])
    with watch.stage("difference"):
        valid = vb & va
        nb, na = comparable(b, a)
        screened = screened_change_mask(
            nb, normalise(na, noise.radiometry, padded), valid, noise.unit, res_m=scene.res_m,
            cfg=config.difference, noise=noise.local,
            origin=(int(padded.row_off), int(padded.col_off)), structure_unit=noise.structure_unit,
            # the core's mask, unless the sighter reads the margin's too (detector.where: changes)
            inner=sl if sight is None or not sight_reads_mask else None)
        mask = screened.mask
        del nb, na
        out = mask[sl].astype(np.uint8)
        out[~valid[sl]] = rio.MaskWriter.NODATA
    if sight is not None:
        with watch.stage("detector"):
            sight(windows, b, vb, a, va, mask)
    return out, screened.looked_share * mask.size
