"""Stage 1: open BEFORE and AFTER, check they are usable, and read them by windows.

The module that opens input rasters: the checks that name the file and the reason, the BEFORE
:class:`Grid`, band matching, windowed, decimated and coarse reads with their validity masks.
AFTER is put on the BEFORE grid in :mod:`pipeline.io.warp`; outputs are written in
:mod:`pipeline.io.outputs`.
"""
from __future__ import annotations

import logging
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import cv2
import numpy as np
import rasterio
from affine import Affine
from pyproj import Geod
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..errors import InputError, UnreadableInputError
from .outputs import atomic_path

log = logging.getLogger(__name__)

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
    #: the input's pixels a side of one of this grid's (``processing.pixel_m``): outputs give
    #: pixel positions and the change mask on the input's own pixels
    factor: int = 1

    def input_px(self, index: float) -> float:
        """A pixel index (a pixel's centre) of this grid as one of the input's own pixels."""
        return input_px(index, self.factor)

    @property
    def pixel_area_m2(self) -> float:
        return self.res_m[0] * self.res_m[1]

    @property
    def mean_res_m(self) -> float:
        return math.sqrt(self.pixel_area_m2)

    def window_transform(self, window: Window) -> Affine:
        return rasterio.windows.transform(window, self.transform)


def input_px(index, factor: int):
    """Pixel indexes (pixels' centres; a number or an array) on pixels ``factor`` times the
    input's own a side (``processing.pixel_m``), as indexes of the input's own pixels."""
    return index if factor == 1 else (np.asarray(index, float) + 0.5) * factor - 0.5


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


def open_raster(path: str | Path, role: str, *, gsd_m: float | None = None, factor: int = 1
                ) -> rasterio.io.DatasetReader:
    """Open a raster for reading and check that the pipeline can use it.

    ``gsd_m``: pixel size in metres given to a plain image (no CRS and no geotransform, e.g. a
    JPEG); it is then read on a nominal grid (see :func:`is_pixel_frame`). Georeferenced files
    ignore it.

    ``factor``: read it averaged over ``factor`` x ``factor`` pixels (GDAL's vrt://, which
    averages as it reads: about the time of reading the file's own pixels); a remainder
    narrower than ``factor`` at the right or bottom is left out. See :func:`averaging_factor`.

    Raises :class:`InputError` naming the file and the reason: no georeference, rotated,
    unsupported dtype, too small; :class:`UnreadableInputError` (a subclass) when it is missing,
    unreadable or truncated, or a VRT's source file is missing.
    """
    path = Path(path)
    if not path.exists():
        raise UnreadableInputError(f"{path}: {role} file not found", path=path)
    if path.is_dir():
        raise UnreadableInputError(f"{path}: {role} is a folder, not a raster file", path=path)
    if path.stat().st_size == 0:
        raise UnreadableInputError(f"{path}: {role} file is empty", path=path)
    ds = _open(path, role)
    nominal = gsd_m if gsd_m is not None and _plain(ds) else None
    if nominal is not None:
        ds.close()
        ds = _open(path, role, _vrt_url(path, ds.width, ds.height, gsd_m=nominal, factor=1))
    try:
        _check_usable(ds, path, role)
    except InputError:
        ds.close()
        raise
    if factor > 1:  # checked as it is, read averaged
        ds.close()
        ds = _open(path, role, _vrt_url(path, ds.width, ds.height, gsd_m=nominal,
                                        factor=factor))
    return ds


def averaging_factor(ds, pixel_m: float) -> int:
    """The whole number of ``ds``'s pixels a side that makes pixels of at most ``pixel_m``
    metres (``processing.pixel_m``), leaving at least 64 a side; 1 when ``pixel_m`` is 0 or
    its own pixels are that coarse already."""
    if pixel_m <= 0:
        return 1
    res = math.sqrt(math.prod(pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)))
    factor = int(pixel_m / res + 1e-6)
    return max(1, min(factor, ds.width // 64, ds.height // 64))


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
        raise UnreadableInputError(f"{path}: {role} cannot be opened ({reason})",
                                   path=path) from None


def _plain(ds) -> bool:
    return ds.crs is None and ds.transform == Affine.identity() and not ds.gcps[0]


def _vrt_url(path: Path, width: int, height: int, *, gsd_m: float | None, factor: int) -> str:
    """GDAL's vrt:// of a file: a plain image on its nominal grid (``gsd_m``), and/or averaged
    over ``factor`` x ``factor`` pixels (whole cells only)."""
    if "?" in str(path) or "&" in str(path):
        raise InputError(f"{path}: a file read through GDAL's vrt:// (a plain image, or "
                         "processing.pixel_m) cannot have '?' or '&' in its path (rename it)",
                         path=path)
    options = []
    cols, rows = width // factor, height // factor
    if factor > 1:
        options += [f"srcwin=0,0,{cols * factor},{rows * factor}", f"outsize={cols},{rows}",
                    "r=average"]
    if gsd_m is not None:
        top = height * gsd_m
        ullr = (f"{NOMINAL_EASTING},{top},{NOMINAL_EASTING + cols * factor * gsd_m},"
                f"{top - rows * factor * gsd_m}")
        options += [f"a_srs={NOMINAL_CRS}", f"a_ullr={ullr}"]
    return f"vrt://{path.absolute()}?" + "&".join(options)


def source_path(ds) -> str:
    """The file a dataset reads: its name, without a vrt:// wrapping (a plain image's, or
    pixels averaged by ``processing.pixel_m``)."""
    name = str(ds.name)
    return name[len("vrt://"):].split("?", 1)[0] if name.startswith("vrt://") else name


def is_pixel_frame(ds) -> bool:
    """True for a plain image opened on its nominal grid (``open_raster(..., gsd_m=)``)."""
    return str(ds.name).startswith("vrt://") and "a_ullr=" in str(ds.name)


def _check_usable(ds, path: Path, role: str) -> None:
    if ds.driver == "VRT" and not is_pixel_frame(ds):
        source = _missing_vrt_source(path)
        if source is not None:  # GDAL opens such a VRT, and fails at the first read
            raise UnreadableInputError(f"{path}: {role}'s source file {source} is missing",
                                       path=path)
    _check_georeference(ds, path, role)
    dtypes = set(ds.dtypes)
    if not dtypes <= SUPPORTED_DTYPES:
        raise InputError(f"{path}: {role} has unsupported data type {', '.join(sorted(dtypes))} "
                         f"(supported: {', '.join(sorted(SUPPORTED_DTYPES))})", path=path)
    if ds.width < 8 or ds.height < 8:
        raise InputError(f"{path}: {role} is only {ds.width} x {ds.height} pixels; at least "
                         "8 x 8 needed", path=path)
    if not data_bands(ds):
        raise InputError(f"{path}: {role} has no data band (only alpha)", path=path)
    missing = _missing_tiff_bytes(ds, path)
    if missing:
        raise UnreadableInputError(f"{path}: {role} is truncated: {missing}", path=path)


def _check_georeference(ds, path: Path, role: str) -> None:
    if _plain(ds):
        raise InputError(f"{path}: {role} has no georeference (no CRS, no geotransform); give "
                         "--gsd METRES to process plain images in pixel coordinates", path=path)
    if ds.crs is None:
        raise InputError(f"{path}: {role} has no CRS (georeference it, e.g. with gdal_translate "
                         "-a_srs)", path=path)
    if ds.transform == Affine.identity() and not ds.gcps[0]:
        raise InputError(f"{path}: {role} has no geotransform", path=path)
    if ds.transform.b != 0 or ds.transform.d != 0:
        raise InputError(f"{path}: {role} has a rotated geotransform; warp it north-up first "
                         "(gdalwarp) so pixel sizes in metres are defined", path=path)


# a source GDAL opens by a connection string, not a local file: NETCDF:"f.nc":var, vrt://...
_NOT_A_FILE = re.compile(r"^(/vsi|[A-Za-z0-9_]{2,}:)")


def _missing_vrt_source(path: Path, depth: int = 0) -> Path | None:
    """The first source file named in the VRT at ``path`` (nested VRTs too) that is missing.

    GDAL opens a VRT from its XML alone and fails only when a pixel is read ("Read failed"),
    in the middle of a run; the XML names each source (``SourceFilename``, relative to the VRT
    when ``relativeToVRT="1"``; a warped VRT's ``SourceDataset``).
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):  # GDAL opened it: any other doubt is GDAL's to raise
        return None
    for node in root.iter():
        if node.tag not in ("SourceFilename", "SourceDataset") or not (node.text or "").strip():
            continue
        name = node.text.strip()
        if _NOT_A_FILE.match(name):
            continue
        source = Path(name)
        if node.get("relativeToVRT") == "1":
            source = path.parent / source
        if not source.exists():
            return Path(os.path.abspath(source))
        if source.suffix.lower() == ".vrt" and depth < 8:
            nested = _missing_vrt_source(source, depth + 1)
            if nested is not None:
                return nested
    return None


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


#: the colours compared first, in this order, wherever a file holds them
RGB = ("red", "green", "blue")


def matching_bands(b_ds, a_ds) -> tuple[list[int], list[int]]:
    """Which bands of BEFORE and AFTER to compare, in pairs.

    Returns BEFORE's band indexes and the matching positions (1-based) among AFTER's data
    bands. Equal counts: all data bands, paired by colour interpretation when both files say
    red, green and blue, else in order. Otherwise the bands both files name alike (colour
    interpretation red/green/blue, else band description, e.g. RGB against RGB + NIR); with
    fewer than two such, all bands, which the difference stage compares as luminance.

    Pairs of red, green and blue come first, in that order, wherever a file stores them (a
    blue-green-red file is compared as red, green, blue): the shadow test takes the third
    compared band as blue (:func:`pipeline.change.difference.shadow_like`). Bands without a
    colour interpretation keep their order.
    """
    bb, ab = data_bands(b_ds), data_bands(a_ds)
    bn, an = _band_names(b_ds, bb), _band_names(a_ds, ab)
    common = [k for k in bn if k and bn.count(k) == 1 and an.count(k) == 1]
    if len(bb) == len(ab):
        if not all(c in common for c in RGB):
            return bb, list(range(1, len(ab) + 1))
        rest = list(zip([b for b, n in zip(bb, bn) if n not in RGB],
                        [i + 1 for i, n in enumerate(an) if n not in RGB]))
        pairs = [(bb[bn.index(c)], an.index(c) + 1) for c in RGB] + rest
        return [b for b, _ in pairs], [a for _, a in pairs]
    if len(common) >= 2:
        common.sort(key=lambda k: RGB.index(k) if k in RGB else len(RGB))  # stable otherwise
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
    """The pixel grid of an opened raster (BEFORE's is the reference of every output)."""
    return Grid(ds.crs, ds.transform, ds.width, ds.height,
                pixel_size_m(ds.crs, ds.transform, ds.width, ds.height), is_pixel_frame(ds))


@runtime_checkable
class OnGridReader(Protocol):
    """A raster that puts itself on the BEFORE grid and reads its own windows there, such as
    :class:`pipeline.io.warp.AfterOnGrid`: :func:`read_window` and :func:`read_display` hand
    it their reads."""

    def read_window(self, window: Window, *, bands: list[int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]: ...

    def read_display(self, grid: Grid, *, bands: list[int] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]: ...

def read_window(ds, window: Window, *, bands: list[int] | None = None,
                nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` as float32 (bands, rows, cols) and its validity mask (rows, cols).

    A pixel is valid when the dataset mask (nodata, mask band, alpha) says so, no band equals the
    ``nodata`` override, and every band is finite. ``ds`` is a rasterio dataset or an
    :class:`OnGridReader` (:class:`pipeline.io.warp.AfterOnGrid`).
    """
    if isinstance(ds, OnGridReader):
        return ds.read_window(window, bands=bands)
    if bands is None:
        bands = data_bands(ds)
    if declares_all_valid(ds, nodata) and len(set(ds.dtypes)) == 1:
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


def declares_all_valid(ds, nodata: float | None) -> bool:
    """True when every pixel of the file is valid by declaration: it holds integers (no NaN)
    and declares no nodata, mask or alpha, and no ``nodata`` override applies."""
    if ds.nodata is not None or nodata is not None:
        return False
    if any(ci == ColorInterp.alpha for ci in ds.colorinterp):
        return False
    return all(flags == [MaskFlags.all_valid] for flags in ds.mask_flag_enums) and \
        all(dt.startswith(("uint", "int")) for dt in ds.dtypes)


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
    if isinstance(ds, OnGridReader):
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
