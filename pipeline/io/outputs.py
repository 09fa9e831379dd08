"""The last stage: outputs written so that a reader never sees half of one.

Atomic writes (a temporary file beside the final one, then a rename), the change-mask writer and
its readers, and the hidden staging folder a run's files are made in before they are published
into the output folder together.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from ..errors import OutputError

if TYPE_CHECKING:
    from .raster import Grid

def _new_file_beside(final: Path) -> Path:
    """A new empty file beside ``final`` under a name of its own, created 0666 less the user's
    umask as any file they write (``tempfile.mkstemp`` makes them 0600, and reading the umask
    means changing it)."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise OutputError(f"{final.parent}: cannot create a temporary file", path=final.parent)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds."""
    final = Path(final)
    tmp_path = _new_file_beside(final)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(final: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``final`` atomically."""
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
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def utc_datetime(value: str | None) -> dt.datetime | None:
    """An ISO 8601 date or datetime as an aware UTC datetime (a naive one, or a date's
    midnight, taken as UTC); None when ``value`` is empty. The dates of pairs, series and
    STAC items, as outputs record them."""
    if not value:
        return None
    stamp = dt.datetime.fromisoformat(value)
    return (stamp.astimezone(dt.timezone.utc) if stamp.tzinfo
            else stamp.replace(tzinfo=dt.timezone.utc))


#: the change mask's colour table (RGB; a TIFF palette holds no opacity): no change white,
#: change magenta (apart from the detections' amber and blue), nodata grey (and transparent in
#: GIS software, as the band's nodata value)
MASK_COLOURS = {0: (255, 255, 255, 255), 1: (230, 0, 200, 255), 255: (160, 160, 160, 255)}
MASK_MEANING = "0 no change, 1 change, 255 nodata"


class MaskWriter:
    """Writes the change mask block by block into a tiled GeoTIFF, then publishes it as a COG.

    Values: 0 no change, 1 change, 255 nodata (outside valid data of either image); the COG
    carries the colour table :data:`MASK_COLOURS` (a paletted band: GIS software shows the
    classes, not a grey ramp) and the band description says what the values mean.
    """

    NODATA = 255

    def __init__(self, final: str | Path, grid: Grid, *, threads: int = 1,
                 input_shape: tuple[int, int] | None = None):
        self.final = Path(final)
        self.grid = grid
        # (height, width) of BEFORE's own pixels, when ``grid`` averages them (grid.factor):
        # the COG is published on them, each mask pixel repeated, the remainder nodata
        self.input_shape = input_shape
        self.threads = max(1, int(threads))  # compressing the COG's tiles
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
        if self._ds.mode != "w":
            self._ds.close()
            self._ds = rasterio.open(self._tmp, "r+")
        self._ds.write_colormap(1, {v: MASK_COLOURS.get(v, (0, 0, 0, 0)) for v in range(256)})
        self._ds.set_band_description(1, f"change mask: {MASK_MEANING}")
        self._ds.close()
        try:
            # a small block cache: the copy reads each block once, and GDAL would otherwise
            # fill the whole cache (hundreds of MB on a large scene) for nothing
            with atomic_path(self.final) as tmp, rasterio.Env(GDAL_CACHEMAX=64 * 1024 * 1024):
                rasterio.shutil.copy(self._on_input_pixels(), tmp, driver="COG",
                                     compress="deflate", overview_resampling="nearest",
                                     blocksize=512, num_threads=self.threads)
        finally:
            self.abort()
            self._tmp.with_suffix(".vrt").unlink(missing_ok=True)

    def _on_input_pixels(self) -> Path:
        """The blocks written, or a VRT of them on BEFORE's own pixels (``input_shape``)."""
        k = self.grid.factor
        if k == 1 or self.input_shape is None:
            return self._tmp
        height, width = self.input_shape
        t = self.grid.transform
        vrt = self._tmp.with_suffix(".vrt")
        vrt.write_text(
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{escape(self.grid.crs.to_wkt())}</SRS>"
            f"<GeoTransform>{t.c!r}, {t.a / k!r}, 0, {t.f!r}, 0, {t.e / k!r}</GeoTransform>"
            f'<VRTRasterBand dataType="Byte" band="1"><NoDataValue>{self.NODATA}</NoDataValue>'
            f"<Description>{escape(f'change mask: {MASK_MEANING}')}</Description>"
            "<ColorInterp>Palette</ColorInterp><ColorTable>" + "".join(
                '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(
                    *MASK_COLOURS.get(v, (0, 0, 0, 0))) for v in range(256)) + "</ColorTable>"
            f'<SimpleSource resampling="nearest"><SourceFilename relativeToVRT="0">'
            f"{escape(str(self._tmp))}</SourceFilename><SourceBand>1</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{self.grid.width}" ySize="{self.grid.height}"/>'
            f'<DstRect xOff="0" yOff="0" xSize="{self.grid.width * k}" '
            f'ySize="{self.grid.height * k}"/></SimpleSource></VRTRasterBand></VRTDataset>')
        return vrt

    def abort(self) -> None:
        """Drop the blocks written so far; nothing is published."""
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
                          "to replace its outputs", path=out)


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
    """Create the output folder ``out`` if needed; :class:`OutputError` when it cannot be
    created or written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: output path exists and is not a folder", path=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder ({err.strerror})",
                          path=out) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: output folder is not writable", path=out)
    return out
