"""Stage 1, second half: AFTER put on the BEFORE grid, its measured shift undone.

GDAL's warper reprojects (:func:`warped_onto`); :class:`AfterOnGrid` reads windows of the result
on demand and resamples them by the shift the co-registration measured (one for the scene, or a
field), with OpenCV's cubic kernel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import InputError
from .raster import (
    Grid,
    data_bands,
    declares_all_valid,
    read_display,
    read_window,
    source_path,
)

#: source pixels read beyond a window on every side: the cubic kernel's reach, and a margin
PAD_PX = 3


def warped_onto(ds, grid: Grid, *, shift_px: tuple[float, float] = (0.0, 0.0),
                nodata: float | None = None, resampling=Resampling.cubic) -> WarpedVRT:
    """A virtual raster of ``ds`` resampled onto ``grid``, its content moved back by ``shift_px``.

    ``shift_px`` is the displacement of ``ds``'s content relative to the grid's, in grid pixels
    (x right, y down). Sampling a grid shifted by the same amount undoes it: pixel (c, r) of the
    result is ``ds`` at grid position (c + dx, r + dy).
    """
    dx, dy = shift_px
    transform = grid.transform @ Affine.translation(dx, dy)
    src_nodata = ds.nodata if ds.nodata is not None else nodata
    # one warper thread: with GDAL_NUM_THREADS=2 the registration of one pair measured shifts
    # 1e-6 px apart from one call to the next (the warper splits its chunks between threads);
    # the pipeline's own workers read in parallel
    kwargs: dict = dict(crs=grid.crs, transform=transform, width=grid.width, height=grid.height,
                        resampling=resampling, warp_extras={"NUM_THREADS": 1})
    if src_nodata is not None and not (isinstance(src_nodata, float) and math.isnan(src_nodata)):
        kwargs.update(src_nodata=src_nodata, nodata=src_nodata)
    elif ColorInterp.alpha not in ds.colorinterp:  # a source alpha band is warped as it is
        kwargs.update(add_alpha=True)
    try:
        return WarpedVRT(ds, **kwargs)
    except Exception as err:  # GDAL cannot build the transformation
        name = source_path(ds)
        raise InputError(f"{name}: cannot be reprojected onto the BEFORE grid ({err})",
                         path=name) from None


def cubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    """The four taps of OpenCV's cubic convolution kernel at fraction ``t`` (pixels -1..2)."""
    c0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.float32([c0, c1, c2, 1 - c0 - c1 - c2])


# -- choosing the source -------------------------------------------------------------------------

def translation_offset(ds, grid: Grid) -> tuple[float, float] | None:
    """Position of ``grid``'s pixel (0, 0) in ``ds``'s pixel coordinates, when the two grids
    differ only by a translation (same CRS, pixel size and orientation); else None."""
    if ds.crs != grid.crs:
        return None
    a, b = ds.transform, grid.transform
    if a.b or a.d or b.b or b.d:
        return None
    if not (math.isclose(a.a, b.a, rel_tol=1e-9) and math.isclose(a.e, b.e, rel_tol=1e-9)):
        return None
    col, row = ~a @ (b.c, b.f)
    return float(col), float(row)


@dataclass(frozen=True)
class LatticeSource:
    """Where AFTER's pixels are read from: a dataset on BEFORE's pixel lattice up to a translation.

    Attributes
    ----------
    ds : dataset
        AFTER itself, or a ``WarpedVRT`` of it on the BEFORE grid (then also ``vrt``).
    offset_px : (col, row)
        Position of BEFORE's pixel (0, 0) in ``ds``'s pixel coordinates.
    bands : list of int
        ``ds``'s band index of each of AFTER's data bands, in order.
    all_valid : bool
        ``ds`` is AFTER itself and declares no nodata, mask or alpha.
    vrt : WarpedVRT or None
        The virtual raster this source opened, to close with it.
    """

    ds: object
    offset_px: tuple[float, float]
    bands: list[int]
    all_valid: bool
    vrt: WarpedVRT | None = None


def lattice_source(ds, grid: Grid, *, nodata: float | None = None) -> LatticeSource:
    """AFTER (``ds``) itself when its grid is BEFORE's translated (two tiles of one product),
    otherwise GDAL's warper puts it on the BEFORE grid first (a ``WarpedVRT``, cubic)."""
    bands = data_bands(ds)
    offset = translation_offset(ds, grid)
    if offset is not None:
        return LatticeSource(ds, offset, bands, declares_all_valid(ds, nodata))
    vrt = warped_onto(ds, grid, nodata=nodata)
    return LatticeSource(vrt, (0.0, 0.0), list(range(1, len(bands) + 1)), False, vrt)


# -- the padded read -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PaddedRead:
    """A block of source pixels that may reach beyond the source.

    Attributes
    ----------
    data : ndarray of float32, shape (B, M, N)
        Zero outside the source and where invalid.
    valid : ndarray of uint8, shape (M, N)
        1 where the source holds valid data.
    whole : bool
        The block lies inside the source.
    """

    data: np.ndarray
    valid: np.ndarray
    whole: bool


def read_padded(src, window: Window, *, bands: list[int], nodata: float | None = None
                ) -> PaddedRead:
    """Source pixels of ``window`` (whole pixels, may reach beyond ``src``), zero and invalid
    outside."""
    col0, row0 = window.col_off, window.row_off
    width, height = window.width, window.height
    if col0 >= 0 and row0 >= 0 and col0 + width <= src.width and row0 + height <= src.height:
        d, v = read_window(src, window, bands=bands, nodata=nodata)
        return PaddedRead(d, v.view(np.uint8), True)
    data = np.zeros((len(bands), height, width), np.float32)
    valid = np.zeros((height, width), np.uint8)
    full = Window(0, 0, src.width, src.height)
    whole = False
    if col0 < src.width and row0 < src.height and col0 + width > 0 and row0 + height > 0:
        inter = window.intersection(full)
        d, v = read_window(src, inter, bands=bands, nodata=nodata)
        r, c = int(inter.row_off - row0), int(inter.col_off - col0)
        data[:, r:r + d.shape[1], c:c + d.shape[2]] = d
        valid[r:r + d.shape[1], c:c + d.shape[2]] = v
        whole = inter.width == width and inter.height == height
    return PaddedRead(data, valid, whole)


# -- the two resamplers --------------------------------------------------------------------------

def _grown_valid(valid: np.ndarray) -> np.ndarray:
    """Valid where every source pixel the cubic kernel touches is valid (uint8)."""
    return cv2.erode(valid, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=0)


def resample_shifted(src: PaddedRead, origin_px: tuple[float, float], shape: tuple[int, int],
                     *, all_valid: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``src`` sampled at ``(x + j, y + i)`` for an output of ``shape`` (h, w).

    Parameters
    ----------
    src : PaddedRead
        Source pixels reaching at least two beyond the output's footprint on every side.
    origin_px : (x, y)
        Position in ``src`` of output pixel (0, 0), source pixels.
    shape : (h, w)
    all_valid : bool
        The source declares no invalid pixels: a block inside it is valid everywhere.

    Returns
    -------
    (B, h, w) float32, (h, w) bool

    Notes
    -----
    One translation, so OpenCV's cubic kernel is separable: two passes of four taps per band, a
    third of the time of ``cv2.warpAffine``, whose values differ only as it rounds positions to
    1/1024 px (5e-3 at most on noise of 255 levels a pixel).
    """
    x, y = origin_px
    h, w = shape
    fx, fy = x - math.floor(x), y - math.floor(y)
    # sepFilter2D correlates around its anchor (tap 2 of 4): output pixel j of the source
    # lattice weighs source pixels j - 2 .. j + 1, so floor(x) + j sits at column j + 1
    c0, r0 = math.floor(x) + 1, math.floor(y) + 1
    kx, ky = cubic_weights(fx), cubic_weights(fy)
    out = np.empty((src.data.shape[0], h, w), np.float32)
    for k in range(src.data.shape[0]):
        out[k] = cv2.sepFilter2D(src.data[k], -1, kx, ky, borderType=cv2.BORDER_REPLICATE
                                 )[r0:r0 + h, c0:c0 + w]
    if all_valid and src.whole:
        return out, np.ones((h, w), bool)
    grown = _grown_valid(src.valid)
    rx, ry = math.floor(x + 0.5), math.floor(y + 0.5)  # nearest source pixel
    return out, grown[ry:ry + h, rx:rx + w] > 0


def resample_field(src: PaddedRead, map_x: np.ndarray, map_y: np.ndarray, *,
                   all_valid: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``src`` sampled at ``(map_x, map_y)`` (float32 (h, w), source pixels) with
    ``cv2.remap``'s cubic kernel; (B, h, w) float32 and (h, w) bool validity."""
    def warp(img, interp, border):
        return cv2.remap(img, map_x, map_y, interp, borderMode=border, borderValue=0)

    data = src.data
    out = np.empty((data.shape[0],) + map_x.shape, np.float32)
    k = 0
    while k < data.shape[0]:
        # three or four bands in one call take half the time of one call each, with the
        # same result; two bands take another path whose rounding differs
        n = 4 if data.shape[0] - k >= 4 else 3 if data.shape[0] - k == 3 else 1
        if n == 1:
            out[k] = warp(data[k], cv2.INTER_CUBIC, cv2.BORDER_REPLICATE)
        else:
            warped = warp(cv2.merge(list(data[k:k + n])), cv2.INTER_CUBIC, cv2.BORDER_REPLICATE)
            out[k:k + n] = warped.transpose(2, 0, 1)
        k += n
    if all_valid and src.whole:
        return out, np.ones(map_x.shape, bool)
    return out, warp(_grown_valid(src.valid), cv2.INTER_NEAREST, cv2.BORDER_CONSTANT) > 0


# -- AFTER on the BEFORE grid --------------------------------------------------------------------

class AfterOnGrid:
    """AFTER seen on the BEFORE grid, its measured shift undone: windows read on demand.

    ``shift_px`` is one displacement for the whole scene, or a callable ``field(cols, rows) ->
    (dx, dy)`` giving it per pixel (local co-registration). A window is read from a source
    that lies on BEFORE's pixel lattice up to a translation (:func:`lattice_source`), with a
    margin (:func:`read_padded`), then resampled with a cubic kernel: separable for one shift
    (:func:`resample_shifted`), ``cv2.remap`` for a field (:func:`resample_field`).
    """

    def __init__(self, ds, grid: Grid, *, shift_px=(0.0, 0.0), nodata: float | None = None):
        self.ds = ds
        self.grid = grid
        self.shift_px = shift_px
        self.field = shift_px if callable(shift_px) else None
        self.nodata = nodata
        self.bands = data_bands(ds)
        self._source = lattice_source(ds, grid, nodata=nodata)

    @property
    def count(self) -> int:
        return len(self.bands)

    def _read(self, col0: int, row0: int, shape: tuple[int, int], bands: list[int] | None
              ) -> PaddedRead:
        """The source block of ``shape`` (h, w) at (col0, row0), for AFTER's ``bands``."""
        idx = list(range(1, len(self.bands) + 1)) if bands is None else bands
        src_bands = [self._source.bands[i - 1] for i in idx]
        return read_padded(self._source.ds, Window(col0, row0, shape[1], shape[0]),
                           bands=src_bands, nodata=self.nodata)

    def read_window(self, window: Window, *, bands: list[int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(bands, rows, cols) float32 and validity of ``window`` of the BEFORE grid."""
        if self.field is None:
            return self._read_shifted(window, bands)
        return self._read_field(window, bands)

    def _read_shifted(self, window: Window, bands: list[int] | None):
        ox, oy = self._source.offset_px
        w, h = int(window.width), int(window.height)
        x0 = window.col_off + self.shift_px[0] + ox
        y0 = window.row_off + self.shift_px[1] + oy
        ix, iy = math.floor(x0) - PAD_PX, math.floor(y0) - PAD_PX
        src = self._read(ix, iy, (h + 2 * PAD_PX + 1, w + 2 * PAD_PX + 1), bands)
        return resample_shifted(src, (x0 - ix, y0 - iy), (h, w), all_valid=self._source.all_valid)

    def _read_field(self, window: Window, bands: list[int] | None):
        ox, oy = self._source.offset_px
        w, h = int(window.width), int(window.height)
        cols, rows = np.meshgrid(np.arange(w, dtype=np.float32) + window.col_off,
                                 np.arange(h, dtype=np.float32) + window.row_off)
        dx, dy = self.field(cols, rows)
        map_x = cols + dx + ox
        map_y = rows + dy + oy
        ix, iy = math.floor(float(map_x.min())) - PAD_PX, math.floor(float(map_y.min())) - PAD_PX
        sw = math.ceil(float(map_x.max())) + PAD_PX + 1 - ix
        sh = math.ceil(float(map_y.max())) + PAD_PX + 1 - iy
        src = self._read(ix, iy, (sh, sw), bands)
        return resample_field(src, (map_x - ix).astype(np.float32),
                              (map_y - iy).astype(np.float32), all_valid=self._source.all_valid)

    def _shift_at(self, col: float, row: float) -> tuple[float, float]:
        """AFTER's displacement (dx, dy) at one point of the BEFORE grid: the one shift, or the
        field's value there."""
        if self.field is None:
            return self.shift_px
        return tuple(float(v[0]) for v in self.field(np.float32([col]), np.float32([row])))

    def read_rounded(self, window: Window, *, bands: list[int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read_window` with the shift rounded to whole pixels (the field's at the
        window's centre), no resampling: for statistics over cells many pixels wide."""
        dx, dy = self._shift_at(window.col_off + window.width / 2,
                                window.row_off + window.height / 2)
        ox, oy = self._source.offset_px
        w, h = int(window.width), int(window.height)
        src = self._read(round(window.col_off + dx + ox), round(window.row_off + dy + oy),
                         (h, w), bands)
        if self._source.all_valid and src.whole:
            return src.data, np.ones((h, w), bool)
        return src.data, src.valid.astype(bool)

    def read_display(self, grid: Grid, *, bands: list[int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The whole of AFTER averaged onto a coarse ``grid`` (the shift at the scene's centre
        undone): GDAL's warper averages the source straight onto it."""
        idx = list(range(1, len(self.bands) + 1)) if bands is None else bands
        dx, dy = self._shift_at(self.grid.width / 2, self.grid.height / 2)
        shift = (dx * grid.width / self.grid.width, dy * grid.height / self.grid.height)
        with warped_onto(self.ds, grid, shift_px=shift, nodata=self.nodata,
                         resampling=Resampling.average) as vrt:
            return read_display(vrt, grid, bands=idx, nodata=self.nodata)

    def close(self) -> None:
        if self._source.vrt is not None:
            self._source.vrt.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def valid_lowres(ds, grid: Grid, *, nodata: float | None = None) -> np.ndarray:
    """Where ``ds`` holds valid data, on a coarse ``grid`` (nearest), (M, N) bool.

    A file that declares no nodata, mask or alpha is valid over its whole footprint, which is
    rasterised without reading a pixel; otherwise the file is read through a coarse warp.
    """
    if declares_all_valid(ds, nodata):
        left, bottom, right, top = ds.bounds
        ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
        geom = {"type": "Polygon", "coordinates": [ring]}
        if ds.crs != grid.crs:
            from rasterio.warp import transform_geom
            geom = transform_geom(ds.crs, grid.crs, geom, precision=-1)
            geom = _densified_check(geom, source_path(ds))
        from rasterio.features import rasterize
        return rasterize([(geom, 1)], out_shape=(grid.height, grid.width),
                         transform=grid.transform, fill=0, dtype="uint8").astype(bool)
    with warped_onto(ds, grid, nodata=nodata, resampling=Resampling.nearest) as lr:
        _, valid = read_display(lr, grid, bands=list(range(1, len(data_bands(ds)) + 1)),
                                nodata=nodata)
    return valid


def _densified_check(geom: dict, name: str) -> dict:
    coords = np.asarray(geom["coordinates"][0], float)
    if not np.all(np.isfinite(coords)):
        raise InputError(f"{name}: its footprint cannot be transformed to the BEFORE CRS "
                         "(a PROJ grid may be missing)", path=name)
    return geom
