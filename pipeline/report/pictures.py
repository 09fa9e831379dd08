"""Scene pictures of one pair: decimated BEFORE and AFTER for overlay.png and report.html,
filled block by block while the pipeline reads the scene (:class:`Overview`), and where the
gallery's chips are read from (:class:`ScenePictures`).

The rest of the report stage lives beside it: :mod:`.draw` (drawing), :mod:`.chips` (chips),
:mod:`.score` (score chips), :mod:`.model` (report.json), :mod:`.html` (report.html).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from affine import Affine

from .. import io as rio
from ..config import Config
from ..detect.classify import Detection
from ..io.readers import OpenReaders
from .chips import ChipSource, chip_windows, reopener
from .draw import PANEL_GAP_PX, display_limits, encode_png, overlay_image, to_display


def picture_grid(grid: rio.Grid, max_side_px: int) -> rio.Grid:
    """``grid`` scaled down (never up) so that its longest side is ``max_side_px``.

    Unlike :func:`pipeline.io.raster.decimated_grid` the factor need not be an integer: a
    1024-pixel scene fills a 1000-pixel panel instead of shrinking to 512.
    """
    s = min(1.0, max_side_px / max(grid.width, grid.height))
    width, height = max(1, round(grid.width * s)), max(1, round(grid.height * s))
    transform = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    return rio.Grid(grid.crs, transform, width, height,
                    (grid.res_m[0] * grid.width / width, grid.res_m[1] * grid.height / height))


class Overview:
    """Decimated BEFORE and AFTER pictures, filled block by block (:meth:`add`)."""

    def __init__(self, grid: rio.Grid, picture: rio.Grid, n_before: int, n_after: int):
        self.grid = picture
        self._sx = picture.width / grid.width
        self._sy = picture.height / grid.height
        self.before = np.zeros((n_before, picture.height, picture.width), np.float32)
        self.after = np.zeros((n_after, picture.height, picture.width), np.float32)
        self.valid_before = np.zeros((picture.height, picture.width), bool)
        self.valid_after = np.zeros((picture.height, picture.width), bool)

    def add(self, col_off: int, row_off: int, before, valid_before, after, valid_after) -> None:
        """Paste one block (its core: arrays (B, m, n) at ``col_off``, ``row_off``)."""
        h, w = valid_before.shape
        x0, x1 = round(col_off * self._sx), round((col_off + w) * self._sx)
        y0, y1 = round(row_off * self._sy), round((row_off + h) * self._sy)
        if x1 <= x0 or y1 <= y0:
            return
        size = (x1 - x0, y1 - y0)
        for src, dst in ((before, self.before), (after, self.after)):
            dst[:, y0:y1, x0:x1] = _area_resize(_integer_reduce(src, size), size)
        for src, dst in ((valid_before, self.valid_before), (valid_after, self.valid_after)):
            if src.all():
                dst[y0:y1, x0:x1] = True
            else:
                dst[y0:y1, x0:x1] = cv2.resize(src.astype(np.uint8), size,
                                               interpolation=cv2.INTER_NEAREST) > 0


def _integer_reduce(bands: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, m, n) averaged over k x k cells, the largest k that keeps it at least ``size``.

    OpenCV averages by an integer factor several times faster than by any other, so a block
    reduced to a few dozen overview pixels goes that way first; the last k - 1 rows and columns
    at most are left out, less than one overview pixel.
    """
    k = min(bands.shape[2] // max(size[0], 1), bands.shape[1] // max(size[1], 1))
    if k < 2:
        return bands
    h, w = bands.shape[1] // k * k, bands.shape[2] // k * k
    return np.stack([cv2.resize(b[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)
                     for b in bands])


def _area_resize(bands: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, m, n) float32 -> (B, size[1], size[0]), each band averaged over pixel areas.

    Three or four bands go through one call (a third of the time, the same values), except for
    an exact halving, where OpenCV's three-band path rounds differently from its one-band one.
    """
    out = np.empty((bands.shape[0], size[1], size[0]), np.float32)
    halving = size == (bands.shape[2] // 2, bands.shape[1] // 2)
    k = 0
    while k < bands.shape[0]:
        n = min(4, bands.shape[0] - k)
        if n >= 3 and not halving:
            merged = cv2.resize(cv2.merge(list(bands[k:k + n])), size, interpolation=cv2.INTER_AREA)
            out[k:k + n] = merged.reshape(size[1], size[0], n).transpose(2, 0, 1)
        else:
            n = 1
            out[k] = cv2.resize(bands[k], size, interpolation=cv2.INTER_AREA)
        k += n
    return out


@dataclass(frozen=True)
class ScenePictures:
    """What overlay.png and report.html show of a scene (:func:`scene_pictures`).

    Attributes
    ----------
    before, after : (M, N, 3) uint8
        Decimated BEFORE and AFTER (on BEFORE's picture grid), stretched for display.
    scale : float
        Picture pixels per BEFORE pixel.
    detections : tuple of Detection
    res_m : float or None
        BEFORE pixel size, metres.
    pixel_frame : bool
        The inputs are plain images placed on a nominal grid (``--gsd``).
    chips : ChipSource or None
        Where the gallery's full-resolution chips are read from; None: no chips.
    factor : int
        The input's own pixels a side of one BEFORE pixel analysed (``processing.pixel_m``):
        report.json gives positions and shifts in the input's own.
    """

    before: np.ndarray
    after: np.ndarray
    scale: float
    detections: tuple[Detection, ...] = ()
    res_m: float | None = None
    pixel_frame: bool = False
    chips: ChipSource | None = None
    factor: int = 1

    def overlay(self) -> np.ndarray:
        """BEFORE | AFTER with the detections outlined, numbered and a legend
        (:func:`pipeline.report.draw.overlay_image`)."""
        return overlay_image(self.before, self.after, self.detections, scale=self.scale,
                             res_m=self.res_m, pixel_frame=self.pixel_frame)


def scene_pictures(b_ds, a_vrt: rio.AfterOnGrid, grid: rio.Grid, detections: Sequence[Detection],
                   *, b_bands: Sequence[int], a_bands: Sequence[int], config: Config,
                   nodata: float | None = None, overview: Overview | None = None,
                   open_readers: OpenReaders | None = None) -> ScenePictures:
    """Decimated BEFORE/AFTER pictures, and where the chips around every detection are read.

    Parameters
    ----------
    b_ds : rasterio dataset
        BEFORE, opened by :func:`pipeline.io.raster.open_raster`.
    a_vrt : AfterOnGrid
        AFTER on the BEFORE grid, its shift undone.
    grid : Grid
        The BEFORE grid.
    detections : sequence of Detection
    b_bands, a_bands : sequence of int
        The bands compared (BEFORE's indexes; positions among AFTER's data bands).
    config : Config
        ``output.overlay_max_px`` (picture size), ``output.chip_m`` (chip size),
        ``input.gsd_m`` (to open plain images again).
    nodata : float, optional
        ``input.nodata``: nodata of inputs that declare none.
    overview : Overview, optional
        Built block by block while the pipeline read the scene: saves a second read of both
        scenes when it lies on the picture grid.
    open_readers : callable() -> context manager of (BEFORE, AFTER on the grid), optional
        Opens fresh checked handles for the chips' worker threads (e.g.
        ``functools.partial(scene.open_aligned, offset)``); by default the files behind
        ``b_ds`` and ``a_vrt`` are opened again with :func:`pipeline.io.raster.open_raster`.

    Returns
    -------
    ScenePictures
        The chips are not read here but when report.html is written, one detection at a
        time (:mod:`pipeline.report.chips`), so memory does not grow with the detections.
    """
    small = picture_grid(grid, max(256, (config.output.overlay_max_px - PANEL_GAP_PX) // 2))
    if overview is not None and overview.grid == small:
        # built block by block while the pipeline read the scene: no second read
        b, vb, a, va = overview.before, overview.valid_before, overview.after, overview.valid_after
    else:
        b, vb = rio.read_display(b_ds, small, bands=list(b_bands), nodata=nodata)
        a, va = rio.read_display(a_vrt, small, bands=list(a_bands), nodata=nodata)
    b_limits, a_limits = display_limits(b, vb), display_limits(a, va)
    half = max(16, int(round(config.output.chip_m / grid.mean_res_m / 2)))
    chips = ChipSource(chip_windows(detections, grid, half), tuple(b_bands), tuple(a_bands),
                       nodata, (b_limits, a_limits),
                       open_readers or reopener(b_ds, a_vrt, gsd_m=config.input.gsd_m))
    return ScenePictures(to_display(b, vb, b_limits), to_display(a, va, a_limits),
                         small.width / grid.width, tuple(detections), grid.mean_res_m,
                         grid.pixel_frame, chips, grid.factor)


def write_overlay(path: str | Path, pictures: ScenePictures) -> Path:
    """Write overlay.png (:meth:`ScenePictures.overlay`) atomically."""
    rio.write_bytes_atomic(path, encode_png(pictures.overlay()))
    return Path(path)
