"""Chips: full-resolution crops of BEFORE and of AFTER (on the BEFORE grid) around each detection,
for report.html's gallery.

A large scene has hundreds of detections, so chips are read when the page is written, one
detection at a time, through :class:`pipeline.io.readers.ReaderPool`: each worker thread reads
with its own handles, opened and checked by :func:`pipeline.io.raster.open_raster`.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
from rasterio.windows import Window

from .. import io as rio
from ..detect.classify import Detection
from ..io.readers import OpenReaders, ReaderPool
from ..io.scene import open_aligned
from .draw import chip_picture, to_display


@dataclass(frozen=True)
class ChipSource:
    """Where the chips of one scene are read from, and how they are stretched.

    Attributes
    ----------
    windows : mapping of detection id -> Window
        The chip of each detection on the BEFORE grid (pixels), clipped to the scene.
    b_bands, a_bands : tuple of int
        The bands compared (BEFORE's indexes; positions among AFTER's data bands).
    nodata : float or None
        ``input.nodata``: nodata of inputs that declare none.
    limits : ((3, 2) ndarray, (3, 2) ndarray)
        Display ranges of BEFORE and AFTER: those of the whole scene, so that a chip of bare
        concrete does not stretch its noise into texture.
    open_readers : callable() -> context manager of (BEFORE, AFTER on the grid)
        Opens fresh checked handles of both files: one pair per worker thread, or one on the
        calling thread. The run's own handles are never used: by the time report.html is
        written they are closed, and two reports written at once must not share them.
    """

    windows: Mapping[str, Window]
    b_bands: tuple[int, ...]
    a_bands: tuple[int, ...]
    nodata: float | None
    limits: tuple[np.ndarray, np.ndarray]
    open_readers: OpenReaders


@dataclass(frozen=True)
class Chip:
    """One detection's chip: display pictures with its outline, and the values read.

    ``before_rgb``, ``after_rgb``: (m', n', 3) uint8, enlarged to at least
    :data:`pipeline.report.draw.CHIP_DISPLAY_PX`; ``before``, ``after``: (B, m, n) float32 on
    the BEFORE grid (AFTER co-registered, not normalised); ``valid``: (m, n) bool, valid in
    both; ``window``: where the chip lies on the BEFORE grid.
    """

    before_rgb: np.ndarray
    after_rgb: np.ndarray
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    window: Window

    @property
    def offset(self) -> tuple[int, int]:
        """The BEFORE pixel (col, row) at the chip's (0, 0)."""
        return int(self.window.col_off), int(self.window.row_off)


def chip_windows(detections: Sequence[Detection], grid: rio.Grid, half_px: int
                 ) -> dict[str, Window]:
    """A ``2 * half_px`` square around each detection's centroid, clipped to the grid."""
    full = Window(0, 0, grid.width, grid.height)
    out = {}
    for det in detections:
        cx, cy = det.blob.centroid_px
        w = Window(int(cx) - half_px, int(cy) - half_px, 2 * half_px, 2 * half_px)
        out[det.id] = w.intersection(full)
    return out


def reopener(b_ds, a_on_grid: rio.AfterOnGrid, *, gsd_m: float | None = None) -> OpenReaders:
    """An opener of fresh handles of the files behind the run's ``b_ds`` and ``a_on_grid``
    (same grid, shift and nodata), for :class:`ChipSource`."""
    return partial(open_aligned, rio.source_path(b_ds), rio.source_path(a_on_grid.ds),
                   a_on_grid.grid, shift_px=a_on_grid.shift_px, nodata=a_on_grid.nodata,
                   gsd_m=gsd_m)


@contextmanager
def chip_pool(source: ChipSource, workers: int) -> Iterator[ReaderPool]:
    """A :class:`ReaderPool` over the chips' files, closed on leaving.

    Its :meth:`~ReaderPool.map_ordered` reads on ``workers`` threads, each with handles of its
    own; with one worker, on the calling thread through handles opened here.
    """
    with ExitStack() as stack:
        shared = stack.enter_context(source.open_readers()) if workers <= 1 else ()
        yield ReaderPool(source.open_readers, shared=shared, workers=max(1, workers))


def read_chip(source: ChipSource, det: Detection, readers: tuple) -> Chip:
    """The chip of ``det`` read through ``readers`` = (BEFORE, AFTER on the grid)."""
    w = source.windows[det.id]
    b, vb = rio.read_window(readers[0], w, bands=list(source.b_bands), nodata=source.nodata)
    a, va = rio.read_window(readers[1], w, bands=list(source.a_bands), nodata=source.nodata)
    offset = (int(w.col_off), int(w.row_off))
    b_limits, a_limits = source.limits
    return Chip(chip_picture(to_display(b, vb, b_limits), det, offset),
                chip_picture(to_display(a, va, a_limits), det, offset), b, a, vb & va, w)
