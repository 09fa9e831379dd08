"""Raster input and output: the only module that opens files.

Opens BEFORE and AFTER, checks they are usable, puts AFTER on the BEFORE grid as a virtual warped
raster (so every later read is a bounded window), and writes outputs atomically.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from pyproj import Geod
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import InputError, OutputError

log = logging.getLogger(__name__)

# mkstemp creates files 0600; published outputs get the usual permissions of the user's umask
_UMASK = os.umask(0)
os.umask(_UMASK)

SUPPORTED_DTYPES = {"uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"}


@dataclass(frozen=True)
class Grid:
    """The BEFORE pixel grid: the reference frame of every output.

    ``res_m`` is the pixel size in metres (x, y), also for geographic CRSs (measured on the
    ellipsoid at the grid centre).
    """

    crs: rasterio.crs.CRS
    transform: Affine
    width: int
    height: int
    res_m: tuple[float, float]
    pixel_frame: bool = False  # a plain image on a nominal grid: outputs in pixel coordinates

    @property
    def pixel_area_m2(self) -> float:
        return self.res_m[0] * self.res_m[1]

    @property
    def mean_res_m(self) -> float:
        return math.sqrt(self.pixel_area_m2)

    def window_transform(self, window: Window) -> Affine:
        return rasterio.windows.transform(window, self.transform)


def pixel_size_m(crs, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """Pixel size in metres along x and y; geodesic at the grid centre for geographic CRSs."""
    if crs.is_geographic:
        geod = Geod(ellps="WGS84")
        cx, cy = transform @ (width / 2, height / 2)
        x1, y1 = transform @ (width / 2 + 1, height / 2)
        x2, y2 = transform @ (width / 2, height / 2 + 1)
        _, _, dx = geod.inv(cx, cy, x1, y1)
        _, _, dy = geod.inv(cx, cy, x2, y2)
        return float(dx), float(dy)
    unit = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
    rx = math.hypot(transform.a, transform.d) * unit
    ry = math.hypot(transform.b, transform.e) * unit
    return float(rx), float(ry)


# plain images (no georeference) are opened through GDAL's vrt:// with a nominal grid: this
# projected CRS, pixel size --gsd, top-left corner at (NOMINAL_EASTING, height * gsd); outputs
# of such a pair are in pixel coordinates (Grid.pixel_frame)
NOMINAL_CRS = "EPSG:32636"
NOMINAL_EASTING = 500000.0


def open_raster(path: str | Path, role: str, *, gsd_m: float | None = None
                ) -> rasterio.io.DatasetReader:
    """Open a raster for reading and check that the pipeline can use it.

    ``gsd_m``: pixel size in metres given to a plain image (no CRS and no geotransform, e.g. a
    JPEG); it is then read on a nominal grid (see :func:`is_pixel_frame`). Georeferenced files
    ignore it.

    Raises :class:`InputError` naming the file and the reason: missing, unreadable, truncated,
    no georeference, rotated, unsupported dtype, too small.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {role} file not found")
    if path.is_dir():
        raise InputError(f"{path}: {role} is a folder, not a raster file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: {role} file is empty")
    ds = _open(path, role)
    if gsd_m is not None and _plain(ds):
        ds.close()
        ds = _open(path, role, _nominal_url(path, ds.width, ds.height, gsd_m))
    try:
        _check_usable(ds, path, role)
    except InputError:
        ds.close()
        raise
    return ds


def _open(path: Path, role: str, url: str | None = None) -> rasterio.io.DatasetReader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(url or path)
    except RasterioIOError as err:
        reason = str(err).split("\n")[0]
        if "not recognized" in reason:
            reason = "not a raster GDAL can read"
        elif "TIFFReadDirectory" in reason or "TIFFFetch" in reason:
            reason = f"truncated or corrupt TIFF: {reason}"
        raise InputError(f"{path}: {role} cannot be opened ({reason})") from None


def _plain(ds) -> bool:
    return ds.crs is None and ds.transform == Affine.identity() and not ds.gcps[0]


def _nominal_url(path: Path, width: int, height: int, gsd_m: float) -> str:
    if "?" in str(path) or "&" in str(path):
        raise InputError(f"{path}: a plain image's path cannot hold '?' or '&' (rename it)")
    top = height * gsd_m
    ullr = f"{NOMINAL_EASTING},{top},{NOMINAL_EASTING + width * gsd_m},0"
    return f"vrt://{path.absolute()}?a_srs={NOMINAL_CRS}&a_ullr={ullr}"


def source_path(ds) -> str:
    """The file a dataset reads: its name, without the vrt:// wrapping of a plain image."""
    name = str(ds.name)
    return name[len("vrt://"):].split("?", 1)[0] if is_pixel_frame(ds) else name


def is_pixel_frame(ds) -> bool:
    """True for a plain image opened on its nominal grid (``open_raster(..., gsd_m=)``)."""
    return str(ds.name).startswith("vrt://") and "a_ullr=" in str(ds.name)


def _check_usable(ds, path: Path, role: str) -> None:
    if _plain(ds):
        raise InputError(f"{path}: {role} has no georeference (no CRS, no geotransform); give "
                         "--gsd METRES to process plain images in pixel coordinates")
    if ds.crs is None:
        raise InputError(f"{path}: {role} has no CRS (georeference it, e.g. with gdal_translate -a_srs)")
    if ds.transform == Affine.identity() and not ds.gcps[0]:
        raise InputError(f"{path}: {role} has no geotransform")
    if ds.transform.b != 0 or ds.transform.d != 0:
        raise InputError(f"{path}: {role} has a rotated geotransform; warp it north-up first "
                         "(gdalwarp) so pixel sizes in metres are defined")
    dtypes = set(ds.dtypes)
    if not dtypes <= SUPPORTED_DTYPES:
        raise InputError(f"{path}: {role} has unsupported data type {', '.join(sorted(dtypes))} "
                         f"(supported: {', '.join(sorted(SUPPORTED_DTYPES))})")
    if ds.width < 8 or ds.height < 8:
        raise InputError(f"{path}: {role} is only {ds.width} x {ds.height} pixels; at least 8 x 8 needed")
    if not data_bands(ds):
        raise InputError(f"{path}: {role} has no data band (only alpha)")
    missing = _missing_tiff_bytes(ds, path)
    if missing:
        raise InputError(f"{path}: {role} is truncated: {missing}")


def _missing_tiff_bytes(ds, path: Path, max_checked: int = 50_000) -> str | None:
    """For a GeoTIFF, the first pixel block whose bytes lie beyond the end of the file, or None.

    Reads only the TIFF's block offsets (no pixels): a copy cut short keeps a readable header
    in a cloud-optimised layout and fails later, in the middle of a run.
    """
    if ds.driver != "GTiff" or is_pixel_frame(ds):
        return None
    size = path.stat().st_size
    bh, bw = ds.block_shapes[0]
    rows, cols = -(-ds.height // bh), -(-ds.width // bw)
    bands = range(1, ds.count + 1) if ds.interleaving == rasterio.enums.Interleaving.band else [1]
    step = max(1, rows * cols * len(bands) // max_checked)
    for b in bands:
        for k in range(rows * cols - 1, -1, -step):  # the last blocks first: written last
            r, c = divmod(k, cols)
            off = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=b)
            n = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=b)
            if off and n and int(off) + int(n) > size:
                return (f"block ({r}, {c}) of band {b} ends at byte {int(off) + int(n)}, the file "
                        f"has {size}")
    return None


def data_bands(ds) -> list[int]:
    """1-based indexes of the bands that hold data (alpha bands excluded)."""
    return [i + 1 for i, ci in enumerate(ds.colorinterp) if ci != ColorInterp.alpha]


_COLOURS = {ColorInterp.red: "red", ColorInterp.green: "green", ColorInterp.blue: "blue"}


def matching_bands(b_ds, a_ds) -> tuple[list[int], list[int]]:
    """Which bands of BEFORE and AFTER to compare, in pairs.

    Returns BEFORE's band indexes and the matching positions (1-based) among AFTER's data
    bands. Equal counts: all data bands, in order. Otherwise the bands both files name alike
    (colour interpretation red/green/blue, else band description, e.g. RGB against RGB + NIR);
    with fewer than two such, all bands, which the difference stage compares as luminance.
    """
    bb, ab = data_bands(b_ds), data_bands(a_ds)
    if len(bb) == len(ab):
        return bb, list(range(1, len(ab) + 1))
    bn, an = _band_names(b_ds, bb), _band_names(a_ds, ab)
    common = [k for k in bn if k and bn.count(k) == 1 and an.count(k) == 1]
    if len(common) >= 2:
        return [bb[bn.index(k)] for k in common], [an.index(k) + 1 for k in common]
    log.info("bands differ (%d against %d) and share no names: comparing luminance", len(bb), len(ab))
    return bb, list(range(1, len(ab) + 1))


def _band_names(ds, bands: list[int]) -> list[str | None]:
    return [_COLOURS.get(ds.colorinterp[i - 1]) or (ds.descriptions[i - 1] or "").strip().lower()
            or None for i in bands]


def describe(ds, role: str) -> dict:
    """A JSON-ready description of an input for report.json."""
    res = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
    return {
        "role": role,
        "path": source_path(ds),
        "crs": ds.crs.to_string(),
        "pixel_size": [abs(ds.transform.a), abs(ds.transform.e)],
        "pixel_size_m": [round(res[0], 4), round(res[1], 4)],
        "width": ds.width,
        "height": ds.height,
        "bands": len(data_bands(ds)),
        "dtype": ds.dtypes[0],
        "nodata": ds.nodata,
    }


def grid_of(ds) -> Grid:
    return Grid(ds.crs, ds.transform, ds.width, ds.height,
                pixel_size_m(ds.crs, ds.transform, ds.width, ds.height), is_pixel_frame(ds))


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
    kwargs: dict = dict(crs=grid.crs, transform=transform, width=grid.width, height=grid.height,
                        resampling=resampling)
    if src_nodata is not None and not (isinstance(src_nodata, float) and math.isnan(src_nodata)):
        kwargs.update(src_nodata=src_nodata, nodata=src_nodata)
    elif ColorInterp.alpha not in ds.colorinterp:  # a source alpha band is warped as it is
        kwargs.update(add_alpha=True)
    try:
        return WarpedVRT(ds, **kwargs)
    except Exception as err:  # GDAL cannot build the transformation
        raise InputError(f"{ds.name}: cannot be reprojected onto the BEFORE grid ({err})") from None


def read_window(ds, window: Window, *, bands: list[int] | None = None,
                nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` as float32 (bands, rows, cols) and its validity mask (rows, cols).

    A pixel is valid when the dataset mask (nodata, mask band, alpha) says so, no band equals the
    ``nodata`` override, and every band is finite. ``ds`` is a rasterio dataset or an
    :class:`AfterOnGrid`.
    """
    if isinstance(ds, AfterOnGrid):
        return ds.read_window(window, bands=bands)
    if bands is None:
        bands = data_bands(ds)
    if _all_valid(ds, nodata) and len(set(ds.dtypes)) == 1:
        # integers without nodata, mask or alpha: no mask to read, and numpy converts to float
        # (exactly) several times faster than GDAL does while reading
        data = ds.read(bands, window=window, boundless=False).astype(np.float32)
        return data, np.ones(data.shape[1:], bool)
    data = ds.read(bands, window=window, boundless=False, out_dtype="float32")
    valid = ds.dataset_mask(window=window) > 0
    if ds.nodata is None and nodata is not None:
        valid &= ~np.all(data == nodata, axis=0)
    if data.dtype.kind == "f":
        valid &= np.all(np.isfinite(data), axis=0)
        data[:, ~valid] = 0
    return data, valid


def _all_valid(ds, nodata: float | None) -> bool:
    """True when the file declares no nodata, mask or alpha (and no override applies)."""
    from rasterio.enums import MaskFlags
    if ds.nodata is not None or nodata is not None:
        return False
    if any(ci == ColorInterp.alpha for ci in ds.colorinterp):
        return False
    return all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums) and \
        all(dt.startswith(("uint", "int")) for dt in ds.dtypes)


def cubic_weights(t: float, a: float = -0.75) -> np.ndarray:
    """The four taps of OpenCV's cubic convolution kernel at fraction ``t`` (pixels -1..2)."""
    c0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return np.float32([c0, c1, c2, 1 - c0 - c1 - c2])


class AfterOnGrid:
    """AFTER seen on the BEFORE grid, its measured shift undone: windows read on demand.

    ``shift_px`` is one displacement for the whole scene, or a callable ``field(cols, rows) ->
    (dx, dy)`` giving it per pixel (local co-registration). A window is read from a source
    that lies on BEFORE's pixel lattice up to a translation, then resampled with a cubic
    kernel (separable for one shift, ``cv2.remap`` for a field). When AFTER's grid
    differs from BEFORE's only by a translation (same CRS, pixel size and orientation: two
    tiles of one product) that source is the file itself; otherwise GDAL's warper puts AFTER on
    the BEFORE grid first (a ``WarpedVRT``, cubic).
    """

    def __init__(self, ds, grid: Grid, *, shift_px=(0.0, 0.0), nodata: float | None = None):
        self.ds = ds
        self.grid = grid
        self.shift_px = shift_px
        self.field = shift_px if callable(shift_px) else None
        self.nodata = nodata
        self.bands = data_bands(ds)
        offset = self._translation_only(ds, grid)
        if offset is not None:
            self._src, self._offset, self._vrt = ds, offset, None
            self._src_bands = self.bands
        else:
            self._vrt = warped_onto(ds, grid, nodata=nodata)
            self._src, self._offset = self._vrt, (0.0, 0.0)
            self._src_bands = list(range(1, len(self.bands) + 1))
        self._all_valid = _all_valid(ds, nodata) and offset is not None

    @staticmethod
    def _translation_only(ds, grid: Grid) -> tuple[float, float] | None:
        """Position of BEFORE's pixel (0, 0) in AFTER's pixel coordinates, if only translated."""
        if ds.crs != grid.crs:
            return None
        a, b = ds.transform, grid.transform
        if a.b or a.d or b.b or b.d:
            return None
        if not (math.isclose(a.a, b.a, rel_tol=1e-9) and math.isclose(a.e, b.e, rel_tol=1e-9)):
            return None
        col, row = ~a @ (b.c, b.f)
        return float(col), float(row)

    @property
    def count(self) -> int:
        return len(self.bands)

    def _read_source(self, col0: int, row0: int, width: int, height: int, bands: list[int]):
        """Source pixels [row0, row0 + height) x [col0, col0 + width), zero and invalid outside."""
        src = self._src
        if col0 >= 0 and row0 >= 0 and col0 + width <= src.width and row0 + height <= src.height:
            d, v = read_window(src, Window(col0, row0, width, height), bands=bands,
                               nodata=self.nodata)
            return d, v.view(np.uint8), True
        data = np.zeros((len(bands), height, width), np.float32)
        valid = np.zeros((height, width), np.uint8)
        full = Window(0, 0, src.width, src.height)
        if col0 < src.width and row0 < src.height and col0 + width > 0 and row0 + height > 0:
            inter = Window(col0, row0, width, height).intersection(full)
            d, v = read_window(src, inter, bands=bands, nodata=self.nodata)
            r, c = int(inter.row_off - row0), int(inter.col_off - col0)
            data[:, r:r + d.shape[1], c:c + d.shape[2]] = d
            valid[r:r + d.shape[1], c:c + d.shape[2]] = v
            whole = inter.width == width and inter.height == height
        else:
            whole = False
        return data, valid, whole

    def read_window(self, window: Window, *, bands: list[int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(bands, rows, cols) float32 and validity of ``window`` of the BEFORE grid."""
        idx = list(range(1, len(self.bands) + 1)) if bands is None else bands
        src_bands = [self._src_bands[i - 1] for i in idx]
        ox, oy = self._offset
        w, h = int(window.width), int(window.height)
        pad = 3
        if self.field is None:
            x0 = window.col_off + self.shift_px[0] + ox
            y0 = window.row_off + self.shift_px[1] + oy
            ix, iy = math.floor(x0) - pad, math.floor(y0) - pad
            data, valid, whole = self._read_source(ix, iy, w + 2 * pad + 1, h + 2 * pad + 1, src_bands)
            return self._translated(data, valid, whole, x0 - ix, y0 - iy, w, h)
        cols, rows = np.meshgrid(np.arange(w, dtype=np.float32) + window.col_off,
                                 np.arange(h, dtype=np.float32) + window.row_off)
        dx, dy = self.field(cols, rows)
        map_x = cols + dx + ox
        map_y = rows + dy + oy
        ix, iy = math.floor(float(map_x.min())) - pad, math.floor(float(map_y.min())) - pad
        sw = math.ceil(float(map_x.max())) + pad + 1 - ix
        sh = math.ceil(float(map_y.max())) + pad + 1 - iy
        data, valid, whole = self._read_source(ix, iy, sw, sh, src_bands)
        map_x = (map_x - ix).astype(np.float32)
        map_y = (map_y - iy).astype(np.float32)

        def warp(img, interp, border):
            return cv2.remap(img, map_x, map_y, interp, borderMode=border, borderValue=0)
        out = np.empty((len(src_bands), h, w), np.float32)
        k = 0
        while k < len(src_bands):
            # three or four bands in one call take half the time of one call each, with the
            # same result; two bands take another path whose rounding differs
            n = 4 if len(src_bands) - k >= 4 else 3 if len(src_bands) - k == 3 else 1
            if n == 1:
                out[k] = warp(data[k], cv2.INTER_CUBIC, cv2.BORDER_REPLICATE)
            else:
                warped = warp(cv2.merge(list(data[k:k + n])), cv2.INTER_CUBIC,
                              cv2.BORDER_REPLICATE)
                out[k:k + n] = warped.transpose(2, 0, 1)
            k += n
        if self._all_valid and whole:
            ok = np.ones((h, w), bool)
        else:
            # valid where every source pixel the cubic kernel touches is valid
            grown = cv2.erode(valid, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                              borderValue=0)
            ok = warp(grown, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT) > 0
        return out, ok

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
        idx = list(range(1, len(self.bands) + 1)) if bands is None else bands
        src_bands = [self._src_bands[i - 1] for i in idx]
        dx, dy = self._shift_at(window.col_off + window.width / 2,
                                window.row_off + window.height / 2)
        ox, oy = self._offset
        w, h = int(window.width), int(window.height)
        data, valid, whole = self._read_source(round(window.col_off + dx + ox),
                                               round(window.row_off + dy + oy), w, h, src_bands)
        if self._all_valid and whole:
            return data, np.ones((h, w), bool)
        return data, valid.astype(bool)

    def _translated(self, data: np.ndarray, valid: np.ndarray, whole: bool, x: float, y: float,
                    w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        """``data`` (B, m, n) resampled at ``(x + j, y + i)`` for an (h, w) output: one
        translation, so OpenCV's cubic kernel is separable: two passes of four taps per band, a
        third of the time of ``cv2.warpAffine``, whose values differ only as it rounds
        positions to 1/1024 px (5e-3 at most on noise of 255 levels a pixel)."""
        fx, fy = x - math.floor(x), y - math.floor(y)
        # sepFilter2D correlates around its anchor (tap 2 of 4): output pixel j of the source
        # lattice weighs source pixels j - 2 .. j + 1, so floor(x) + j sits at column j + 1
        c0, r0 = math.floor(x) + 1, math.floor(y) + 1
        kx, ky = cubic_weights(fx), cubic_weights(fy)
        out = np.empty((data.shape[0], h, w), np.float32)
        for k in range(data.shape[0]):
            out[k] = cv2.sepFilter2D(data[k], -1, kx, ky, borderType=cv2.BORDER_REPLICATE
                                     )[r0:r0 + h, c0:c0 + w]
        if self._all_valid and whole:
            return out, np.ones((h, w), bool)
        # valid where every source pixel the cubic kernel touches is valid
        grown = cv2.erode(valid, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT,
                          borderValue=0)
        rx, ry = math.floor(x + 0.5), math.floor(y + 0.5)  # nearest source pixel
        return out, grown[ry:ry + h, rx:rx + w] > 0

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
        if self._vrt is not None:
            self._vrt.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_decimated(ds, factor: int, *, bands: list[int] | None = None,
                   nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The whole raster read at 1/``factor`` resolution (nearest), with its validity mask."""
    if bands is None:
        bands = data_bands(ds)
    h = max(1, ds.height // factor)
    w = max(1, ds.width // factor)
    data = ds.read(bands, out_shape=(len(bands), h, w), resampling=Resampling.nearest,
                   out_dtype="float32")
    valid = ds.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0
    if ds.nodata is None and nodata is not None:
        valid &= ~np.all(data == nodata, axis=0)
    valid &= np.all(np.isfinite(data), axis=0)
    return data, valid


def coarse_cells(values: np.ndarray, valid: np.ndarray, factor: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(B, m, n) values averaged over ``factor`` x ``factor`` cells, over their valid pixels,
    and each cell's valid share: ((B, m // factor, n // factor) float32, (same) float32).
    A remainder narrower than a cell at the right or bottom is left out."""
    h, w = valid.shape[0] // factor, valid.shape[1] // factor
    values, valid = values[:, :h * factor, :w * factor], valid[:h * factor, :w * factor]
    size = (w, h)
    if valid.all():
        means = np.stack([cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in values])
        return means.astype(np.float32, copy=False), np.ones((h, w), np.float32)
    v = valid.astype(np.float32)
    share = cv2.resize(v, size, interpolation=cv2.INTER_AREA)
    sums = np.stack([cv2.resize(x * v, size, interpolation=cv2.INTER_AREA) for x in values])
    means = np.divide(sums, share, out=np.zeros_like(sums), where=share > 0)
    return means.astype(np.float32, copy=False), share


def valid_lowres(ds, grid: Grid, *, nodata: float | None = None) -> np.ndarray:
    """Where ``ds`` holds valid data, on a coarse ``grid`` (nearest), (M, N) bool.

    A file that declares no nodata, mask or alpha is valid over its whole footprint, which is
    rasterised without reading a pixel; otherwise the file is read through a coarse warp.
    """
    if _all_valid(ds, nodata):
        left, bottom, right, top = ds.bounds
        ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
        geom = {"type": "Polygon", "coordinates": [ring]}
        if ds.crs != grid.crs:
            from rasterio.warp import transform_geom
            geom = transform_geom(ds.crs, grid.crs, geom, precision=-1)
            geom = _densified_check(geom, ds.name)
        from rasterio.features import rasterize
        return rasterize([(geom, 1)], out_shape=(grid.height, grid.width),
                         transform=grid.transform, fill=0, dtype="uint8").astype(bool)
    with warped_onto(ds, grid, nodata=nodata, resampling=Resampling.nearest) as lr:
        _, valid = read_display(lr, grid, bands=list(range(1, len(data_bands(ds)) + 1)),
                                nodata=nodata)
    return valid


def _densified_check(geom: dict, name) -> dict:
    coords = np.asarray(geom["coordinates"][0], float)
    if not np.all(np.isfinite(coords)):
        raise InputError(f"{name}: its footprint cannot be transformed to the BEFORE CRS "
                         "(a PROJ grid may be missing)")
    return geom


def block_windows(width: int, height: int, block_px: int, margin_px: int
                  ) -> Iterator[tuple[Window, Window]]:
    """Tile a ``width`` x ``height`` grid into blocks: yields (core, padded) windows.

    The cores partition the grid; each padded window is its core grown by ``margin_px`` on every
    side and clipped to the grid.
    """
    for row in range(0, height, block_px):
        for col in range(0, width, block_px):
            core = Window(col, row, min(block_px, width - col), min(block_px, height - row))
            c0, r0 = max(0, col - margin_px), max(0, row - margin_px)
            c1 = min(width, col + core.width + margin_px)
            r1 = min(height, row + core.height + margin_px)
            yield core, Window(c0, r0, c1 - c0, r1 - r0)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(final: str | Path, text: str) -> None:
    write_parts_atomic(final, [text])


def write_parts_atomic(final: str | Path, parts: Iterable[str]) -> None:
    """Write the text ``parts`` one after the other (each made when its turn comes), atomically."""
    with atomic_path(final) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(final: str | Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


class MaskWriter:
    """Writes the change mask block by block into a tiled GeoTIFF, then publishes it as a COG.

    Values: 0 no change, 1 change, 255 nodata (outside valid data of either image).
    """

    NODATA = 255

    def __init__(self, final: str | Path, grid: Grid):
        self.final = Path(final)
        self.grid = grid
        fd, tmp = tempfile.mkstemp(prefix=f".{self.final.name}.", suffix=".blocks.tif",
                                   dir=self.final.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        # ZSTD: as small as deflate on a mask, read back (pass 2, the COG copy) 3x faster
        self._ds = rasterio.open(
            self._tmp, "w", driver="GTiff", width=grid.width, height=grid.height, count=1,
            dtype="uint8", crs=grid.crs, transform=grid.transform, nodata=self.NODATA,
            tiled=True, blockxsize=256, blockysize=256, compress="zstd")

    def write(self, window: Window, mask: np.ndarray) -> None:
        self._ds.write(mask.astype("uint8", copy=False), 1, window=window)

    def flush(self) -> None:
        """Reopen the blocks written so far for reading (pass 2 reads the mask back)."""
        self._ds.close()
        self._ds = rasterio.open(self._tmp)

    def read(self, window: Window) -> np.ndarray:
        """The mask in ``window`` (after :meth:`flush`); outside the grid reads as nodata."""
        return _read_mask(self._ds, window)

    def reader(self) -> MaskReader:
        """Another handle on the blocks written so far (after :meth:`flush`), for one thread."""
        return MaskReader(self._tmp)

    def close(self) -> None:
        """Finish: build overviews, copy to a COG under a temporary name, rename."""
        self._ds.close()
        try:
            # a small block cache: the copy reads each block once, and GDAL would otherwise
            # fill the whole cache (hundreds of MB on a large scene) for nothing
            with atomic_path(self.final) as tmp, rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024):
                rasterio.shutil.copy(self._tmp, tmp, driver="COG", compress="deflate",
                                     overview_resampling="nearest", blocksize=512)
        finally:
            self.abort()

    def abort(self) -> None:
        if not self._ds.closed:
            self._ds.close()
        if self._tmp.exists():
            self._tmp.unlink()


class MaskReader:
    """Reads a :class:`MaskWriter`'s blocks from one thread (GDAL handles are not shared)."""

    def __init__(self, path: Path):
        self._ds = rasterio.open(path)

    def read(self, window: Window) -> np.ndarray:
        """The mask in ``window``; outside the grid reads as nodata."""
        return _read_mask(self._ds, window)

    def close(self) -> None:
        self._ds.close()


def _read_mask(ds, window: Window) -> np.ndarray:
    inside = (window.col_off >= 0 and window.row_off >= 0 and
              window.col_off + window.width <= ds.width and
              window.row_off + window.height <= ds.height)
    if inside:  # a boundless read goes through a VRT: several times slower
        return ds.read(1, window=window)
    return ds.read(1, window=window, boundless=True, fill_value=MaskWriter.NODATA)


STAGE_PREFIX = ".partial-"  # a run's hidden staging folder in the output folder


def refuse_used_output_dir(out: Path) -> None:
    """An existing output folder must be empty, or hold only a killed run's staging folder."""
    if out.is_dir() and any(not p.name.startswith(STAGE_PREFIX) for p in out.iterdir()):
        raise OutputError(f"{out}: output folder exists and is not empty; use --overwrite "
                          "to replace its outputs")


@contextlib.contextmanager
def staged_outputs(out: Path) -> Iterator[Path]:
    """A fresh hidden folder in ``out`` for one run's files, removed afterwards in any case.

    Files are made there and moved into ``out`` by :func:`publish` once all of them exist, so a
    run that fails or is killed leaves the outputs of an earlier run whole. Folders left by
    killed runs (their process is gone) are removed first.
    """
    for old in out.glob(f"{STAGE_PREFIX}*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=out))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(stage: Path, out: Path, files: list[Path], *, last: str) -> dict[str, Path]:
    """Move ``files`` (in ``stage``) into ``out`` by renames, the one named ``last`` at the end."""
    published = {}
    for f in sorted(files, key=lambda f: f.name == last):
        os.replace(f, out / f.name)
        published[f.name] = out / f.name
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames reach the disk before anyone reads report.json
    finally:
        os.close(fd)
    return published


def ensure_output_dir(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: output folder is not writable")
    return out


def decimated_grid(grid: Grid, max_side_px: int) -> tuple[Grid, int]:
    """A coarser copy of ``grid`` whose longest side is at most ``max_side_px``; and the factor."""
    factor = max(1, math.ceil(max(grid.width, grid.height) / max_side_px))
    width = max(1, grid.width // factor)
    height = max(1, grid.height // factor)
    transform = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    return Grid(grid.crs, transform, width, height,
                (grid.res_m[0] * grid.width / width, grid.res_m[1] * grid.height / height)), factor


def read_display(ds, grid: Grid, *, bands: list[int], nodata: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Read ``ds`` (already on the full grid) resampled to the coarser ``grid``, with validity."""
    if isinstance(ds, AfterOnGrid):
        return ds.read_display(grid, bands=bands)
    data = ds.read(bands, out_shape=(len(bands), grid.height, grid.width),
                   resampling=Resampling.average, out_dtype="float32")
    valid = ds.dataset_mask(out_shape=(grid.height, grid.width),
                            resampling=Resampling.nearest) > 0
    if ds.nodata is None and nodata is not None:
        valid &= ~np.all(data == nodata, axis=0)
    valid &= np.all(np.isfinite(data), axis=0)
    return data, valid


def wrap_plain_image(src: str | Path, dst: str | Path, *, gsd_m: float,
                     origin_xy_m: tuple[float, float] = (500000.0, 4000000.0),
                     crs: str = "EPSG:32636", offset_px: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Write a plain image (JPEG, PNG...) as a GeoTIFF on a nominal north-up grid.

    ``offset_px`` (col, row) places the image's top-left pixel that many pixels right and down of
    ``origin_xy_m`` (for crops of one scene with a known relative position).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src) as ds:
            data = ds.read()
    x0 = origin_xy_m[0] + offset_px[0] * gsd_m
    y0 = origin_xy_m[1] - offset_px[1] * gsd_m
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=Affine(gsd_m, 0, x0, 0, -gsd_m, y0),
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with atomic_path(dst) as tmp:
        with rasterio.open(tmp, "w", **profile) as out:
            out.write(data)
    return Path(dst)
