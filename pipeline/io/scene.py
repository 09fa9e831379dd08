"""The pair as the stages see it: both rasters opened and checked, the BEFORE grid, the bands to
compare, nodata, and where both hold valid data (:class:`Scene`).

Opening a scene is the first stage of :func:`pipeline.run.run_pair`; every later stage reads
through it, and worker threads open their own handles of the same files with
:meth:`Scene.open_aligned`.
"""
from __future__ import annotations

from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ContextManager, Iterator

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from .. import io as rio
from ..config import Config
from ..errors import InputError
from .readers import ReaderPool

#: validity of both scenes is judged on a decimated grid of at most this many pixels a side
VALIDITY_SIDE_PX = 1024


@dataclass(frozen=True)
class Validity:
    """Where BEFORE and AFTER hold valid data, on a decimated copy of the BEFORE grid.

    Attributes
    ----------
    grid : Grid
        The decimated grid, ``factor`` BEFORE pixels a cell.
    factor : int
    joint : ndarray of bool, shape (M, N)
        Cells valid in both.
    overlap : float
        Share of BEFORE's extent covered by valid AFTER (0 to 1).
    """

    grid: rio.Grid
    factor: int
    joint: np.ndarray
    overlap: float


@dataclass(frozen=True)
class Scene:
    """Both rasters of a pair, open and checked, with what every stage needs to read them.

    Attributes
    ----------
    before, after : str
        The paths as given.
    b_ds, a_ds : DatasetReader
        The open datasets (closed with :func:`open_scene`'s context).
    grid : Grid
        BEFORE's grid: the frame of every output.
    b_bands, a_bands : list of int
        The bands compared, in pairs (BEFORE's indexes; positions among AFTER's data bands).
    nodata : float or None
        ``input.nodata``: nodata of inputs that declare none.
    gsd_m : float or None
        ``input.gsd_m``: the pixel size given to plain images.
    validity : Validity
    factors : (int, int)
        BEFORE's and AFTER's own pixels a side of one pixel read (``processing.pixel_m``;
        ``grid.factor`` is BEFORE's).
    described : dict
        report.json's ``inputs``: each file as it is, whatever pixels it is read at.
    """

    before: str
    after: str
    b_ds: DatasetReader
    a_ds: DatasetReader
    grid: rio.Grid
    b_bands: list[int]
    a_bands: list[int]
    nodata: float | None
    gsd_m: float | None
    validity: Validity
    factors: tuple[int, int] = (1, 1)
    described: dict | None = None

    @property
    def res_m(self) -> float:
        """Mean pixel size of the BEFORE grid, metres."""
        return self.grid.mean_res_m

    def inputs(self) -> dict:
        """report.json's ``inputs``: a description of each file."""
        return self.described or {"before": rio.describe(self.b_ds, "before"),
                                  "after": rio.describe(self.a_ds, "after")}

    def on_grid(self, offset) -> rio.AfterOnGrid:
        """AFTER on the BEFORE grid through the scene's own handle, ``offset`` undone (a shift
        ``(dx, dy)`` in pixels, or a shift field)."""
        return rio.AfterOnGrid(self.a_ds, self.grid, shift_px=offset, nodata=self.nodata)

    def open_aligned(self, offset) -> ContextManager[tuple[DatasetReader, rio.AfterOnGrid]]:
        """Fresh handles of both files, checked as the scene's were: (BEFORE, AFTER on the
        grid with ``offset`` undone). For a worker thread; closed on leaving the context."""
        return open_aligned(self.before, self.after, self.grid, shift_px=offset,
                            nodata=self.nodata, gsd_m=self.gsd_m, factors=self.factors)

    def reader_pool(self, offset, a_vrt: rio.AfterOnGrid, threads: int, *extra) -> ReaderPool:
        """A pool of ``threads`` workers, each reading (BEFORE, AFTER on the grid with
        ``offset`` undone, a reader of each of ``extra``) through handles of its own; the
        scene's handles (``a_vrt`` its AFTER on the grid) without worker threads."""
        @contextmanager
        def opened():
            with self.open_aligned(offset) as (b, a), ExitStack() as stack:
                yield (b, a, *(stack.enter_context(closing(w.reader())) for w in extra))

        return ReaderPool(opened, shared=(self.b_ds, a_vrt, *extra), workers=threads)

    def read(self, readers, window: Window):
        """(before, before valid, after, after valid) of the compared bands in ``window``,
        through ``readers`` = (BEFORE, AFTER on the grid)."""
        b, vb = rio.read_window(readers[0], window, bands=self.b_bands, nodata=self.nodata)
        a, va = rio.read_window(readers[1], window, bands=self.a_bands, nodata=self.nodata)
        return b, vb, a, va


@contextmanager
def open_aligned(before: str | Path, after: str | Path, grid: rio.Grid, *, shift_px,
                 nodata: float | None = None, gsd_m: float | None = None,
                 factors: tuple[int, int] = (1, 1)
                 ) -> Iterator[tuple[DatasetReader, rio.AfterOnGrid]]:
    """Fresh handles of both files, opened and checked by :func:`~pipeline.io.raster.open_raster`:
    (BEFORE, AFTER on ``grid`` with ``shift_px`` undone), closed on leaving; each averaged
    over ``factors`` of its pixels a side."""
    with ExitStack() as stack:
        b = stack.enter_context(rio.open_raster(before, "BEFORE", gsd_m=gsd_m, factor=factors[0]))
        a = stack.enter_context(rio.open_raster(after, "AFTER", gsd_m=gsd_m, factor=factors[1]))
        yield b, stack.enter_context(rio.AfterOnGrid(a, grid, shift_px=shift_px, nodata=nodata))


def check_pair(b_ds, a_ds, before, after, config: Config) -> None:
    """Refuse pairs the pipeline cannot compare: one plain image and one georeferenced, or
    pixel sizes further apart than ``input.max_pixel_size_ratio``."""
    if rio.is_pixel_frame(b_ds) != rio.is_pixel_frame(a_ds):
        plain, other = (before, after) if rio.is_pixel_frame(b_ds) else (after, before)
        raise InputError(f"{plain}: has no georeference but {other} has; --gsd places plain "
                         "images only when both are plain", path=plain)
    b_res = rio.pixel_size_m(b_ds.crs, b_ds.transform, b_ds.width, b_ds.height)
    a_res = rio.pixel_size_m(a_ds.crs, a_ds.transform, a_ds.width, a_ds.height)
    ratio = max(max(a_res) / min(b_res), max(b_res) / min(a_res))
    if ratio > config.input.max_pixel_size_ratio:
        raise InputError(
            f"{after}: pixel size {max(a_res):.3g} m against BEFORE's {max(b_res):.3g} m "
            f"({ratio:.1f}x apart, more than input.max_pixel_size_ratio "
            f"{config.input.max_pixel_size_ratio:g}); objects of a few metres vanish in the "
            "coarser image", path=after)


def measure_validity(b_ds, a_ds, grid: rio.Grid, nodata: float | None) -> Validity:
    """Where both hold valid data, on a grid decimated to :data:`VALIDITY_SIDE_PX`."""
    lr_grid, factor = rio.decimated_grid(grid, VALIDITY_SIDE_PX)
    b_valid = rio.valid_lowres(b_ds, lr_grid, nodata=nodata)
    a_valid = rio.valid_lowres(a_ds, lr_grid, nodata=nodata)
    return Validity(lr_grid, factor, b_valid & a_valid, float(a_valid.mean()))


@contextmanager
def open_scene(before: str | Path, after: str | Path, config: Config, *,
               min_overlap: float | None = None) -> Iterator[Scene]:
    """Open and check both rasters and measure where they overlap.

    Parameters
    ----------
    before, after : path
        Rasters GDAL can read (plain images too with ``input.gsd_m``).
    config : Config
    min_overlap : float, optional
        Refuse a pair whose AFTER covers less of BEFORE than this share (``min_overlap`` of
        the config when run by :func:`pipeline.run.run_pair`); None: only a pair with no
        valid pixel in common is refused.

    Raises
    ------
    InputError
        Naming the file and the reason.
    """
    gsd_m, nodata = config.input.gsd_m, config.input.nodata
    with ExitStack() as stack:
        b_ds = stack.enter_context(rio.open_raster(before, "BEFORE", gsd_m=gsd_m))
        a_ds = stack.enter_context(rio.open_raster(after, "AFTER", gsd_m=gsd_m))
        check_pair(b_ds, a_ds, before, after, config)
        factors = (rio.averaging_factor(b_ds, config.processing.pixel_m),
                   rio.averaging_factor(a_ds, config.processing.pixel_m))
        described = None
        if factors != (1, 1):  # the files as they are, then read averaged
            described = {"before": rio.describe(b_ds, "before"),
                         "after": rio.describe(a_ds, "after")}
            stack.close()
            b_ds = stack.enter_context(rio.open_raster(before, "BEFORE", gsd_m=gsd_m,
                                                       factor=factors[0]))
            a_ds = stack.enter_context(rio.open_raster(after, "AFTER", gsd_m=gsd_m,
                                                       factor=factors[1]))
        grid = replace(rio.grid_of(b_ds), factor=factors[0])
        b_bands, a_bands = rio.matching_bands(b_ds, a_ds)
        validity = measure_validity(b_ds, a_ds, grid, nodata)
        if min_overlap is not None:
            if not validity.joint.any():
                raise InputError(f"{after}: no valid pixels overlap BEFORE ({before})", path=after)
            if validity.overlap < min_overlap:
                raise InputError(f"{after}: covers only {validity.overlap:.1%} of BEFORE "
                                 f"({before}); min_overlap is {min_overlap:.0%}", path=after)
        yield Scene(str(before), str(after), b_ds, a_ds, grid, b_bands, a_bands, nodata, gsd_m,
                    validity, factors, described)
