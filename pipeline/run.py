"""Run one BEFORE/AFTER pair through every stage: the only module that knows their order.

Reads both rasters block by block on the BEFORE grid (AFTER through a virtual warp that also
undoes the measured shift), so memory is bounded by the block size, not the scene size.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window

from . import __version__
from .io import raster as rio
from .detect import verifier
from .detect.blobs import Blob, find_blobs, measure, split_at_necks
from .detect.classify import (Detection, classical_rule, classify_blob, link_moves, may_hold_class,
                       one_per_object, ring_around, stands_out)
from .config import Config
from .coreg.shift import Shift, estimate_field, estimate_shift
from .change.difference import (LOCAL_NOISE_M, LocalNoise, block_change_mask, change_score,
                         gradient_magnitude, local_noise_gain, local_radius_px, mask_reach_px,
                         noise_sample_step, robust_sigma, smooth)
from .errors import InputError, RegistrationError
from .change.radiometry import Radiometry, comparable, fast_quantiles, fit_level, fit_linear, normalise

log = logging.getLogger(__name__)

LEVEL_SAMPLES = 10  # coarse pixels per side of a cell of the level field (radiometry.level_m)

Progress = Callable[[int, int], None]


class _Candidate(NamedTuple):
    """One region's detection in pass 2: whether the classical path keeps it, its verifier
    features (None when not judged) and the classical rule that would drop it."""

    det: Detection
    classical: bool
    features: np.ndarray | None
    rule: str | None


@dataclass
class PairResult:
    """What a run produced: detections, the measurements behind them, and the files written."""

    before: str
    after: str
    out_dir: Path
    detections: list[Detection]
    shift: Shift | None
    radiometry: Radiometry
    overlap: float
    report: dict
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Stopwatch:
    """Seconds per stage; stages run on several threads add up their threads' time."""

    timings: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 3)


class _ReaderPool:
    """Runs the blocks of a pass on ``workers`` threads, each with its own dataset handles.

    GDAL datasets must not be shared between threads; OpenCV and GDAL release the GIL, so two
    blocks in flight keep two cores busy. Each worker takes a whole stripe of blocks and goes
    down it, so the file tiles that neighbouring blocks share are decoded once and then found
    in GDAL's block cache (a stripe's few rows of tiles fit; a whole scene's width does not).
    At most ``2 * workers`` results wait to be consumed, so memory stays bounded whatever the
    scene size. Results come back in the order they are done.
    """

    def __init__(self, before, after, grid, shift, nodata, *, shared, workers: int,
                 gsd_m: float | None = None, mask: rio.MaskWriter | None = None):
        self.args = (before, after, grid, shift, nodata)
        self.gsd_m = gsd_m
        self.mask = mask  # pass 2: each worker also reads the mask written in pass 1
        self.shared = shared
        self.workers = max(1, workers)
        self._local = threading.local()
        self._opened: list = []
        self._lock = threading.Lock()

    def _readers(self):
        if self.workers == 1:
            return self.shared
        if not hasattr(self._local, "readers"):
            before, after, grid, shift, nodata = self.args
            b = rio.open_raster(before, "BEFORE", gsd_m=self.gsd_m)
            a = rio.open_raster(after, "AFTER", gsd_m=self.gsd_m)
            a_grid = rio.AfterOnGrid(a, grid, shift_px=shift, nodata=nodata)
            readers = (b, a_grid)
            if self.mask is not None:
                readers += (self.mask.reader(),)
            with self._lock:
                self._opened += [a_grid, a, b, *readers[2:]]
            self._local.readers = readers
        return self._local.readers

    def map(self, fn, stripes: list[list]):
        """``(item[0], fn(item, readers))`` for every item of every stripe."""
        if self.workers == 1:
            for stripe in stripes:
                for item in stripe:
                    yield item[0], fn(item, self.shared)
            return
        kernel_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # parallel blocks instead of parallel kernels
        try:
            yield from self._map(fn, stripes)
        finally:
            cv2.setNumThreads(kernel_threads)

    def _map(self, fn, stripes: list[list]):
        import queue

        results: queue.Queue = queue.Queue(maxsize=2 * self.workers)
        todo = iter(stripes)
        stop = threading.Event()

        def put(entry) -> None:
            while not stop.is_set():
                try:
                    results.put(entry, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def work() -> None:
            try:
                readers = self._readers()
                while not stop.is_set():
                    with self._lock:
                        stripe = next(todo, None)
                    if stripe is None:
                        return
                    for item in stripe:
                        if stop.is_set():
                            return
                        put((item[0], fn(item, readers), None))
            except BaseException as err:  # handed to the consumer, raised there
                put((None, None, err))

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        try:
            for _ in range(sum(len(s) for s in stripes)):
                core, value, err = results.get()
                if err is not None:
                    raise err
                yield core, value
        finally:
            stop.set()
            for t in threads:
                t.join()

    def close(self) -> None:
        for h in self._opened:
            h.close()
        self._opened.clear()


def _stripe_px(b_ds, a_ds, block_px: int, tiled_stripe_px: int = 4096) -> int:
    """Width of the stripes of pass-1 blocks that one worker goes down.

    Tiled inputs: about ``tiled_stripe_px``, so that the tiles a stripe's blocks share stay in
    GDAL's block cache; files stored in strips of whole rows: the whole width (every block of a
    row reads the same strips).
    """
    tiled = all(ds.block_shapes[0][1] < ds.width for ds in (b_ds, a_ds))
    if not tiled:
        return max(b_ds.width, a_ds.width, block_px)
    return max(block_px, tiled_stripe_px // block_px * block_px)


def _stripes(blocks: list[tuple[Window, Window]], stripe_px: int) -> list[list]:
    """``blocks`` grouped into vertical stripes ``stripe_px`` wide, each in row order."""
    groups: dict[int, list] = {}
    for item in blocks:
        groups.setdefault(int(item[0].col_off) // stripe_px, []).append(item)
    return [groups[k] for k in sorted(groups)]


def _may_hold_blobs(block_windows: tuple[Window, Window], changed: set[tuple[int, int]],
                    block_px: int) -> bool:
    """Whether a pass-2 block can hold a blob: the blobs it keeps start in its core, so their
    pixels lie in that core or in the cores below and to the right that its padded window
    reaches; ``changed`` holds the (row, col) offsets of the cores with a pixel of change."""
    core, padded = block_windows
    r, c = int(core.row_off), int(core.col_off)
    below = int(padded.row_off + padded.height) - r
    right = int(padded.col_off + padded.width) - c
    return any((r + dr, c + dc) in changed
               for dr in range(0, below, block_px) for dc in range(0, right, block_px))


def blob_margin_px(config: Config, res_m: float) -> int:
    """Block overlap wide enough that any blob of class size lies whole in one padded block."""
    return int(math.ceil(math.sqrt(2) * config.max_footprint_m / res_m)) + 4


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


def check_pair(b_ds, a_ds, before, after, config: Config) -> None:
    """Refuse pairs the pipeline cannot compare: one plain image and one georeferenced, or
    pixel sizes further apart than ``input.max_pixel_size_ratio``."""
    if rio.is_pixel_frame(b_ds) != rio.is_pixel_frame(a_ds):
        plain, other = (before, after) if rio.is_pixel_frame(b_ds) else (after, before)
        raise InputError(f"{plain}: has no georeference but {other} has; --gsd places plain "
                         "images only when both are plain")
    b_res = rio.pixel_size_m(b_ds.crs, b_ds.transform, b_ds.width, b_ds.height)
    a_res = rio.pixel_size_m(a_ds.crs, a_ds.transform, a_ds.width, a_ds.height)
    ratio = max(max(a_res) / min(b_res), max(b_res) / min(a_res))
    if ratio > config.input.max_pixel_size_ratio:
        raise InputError(
            f"{after}: pixel size {max(a_res):.3g} m against BEFORE's {max(b_res):.3g} m "
            f"({ratio:.1f}x apart, more than input.max_pixel_size_ratio "
            f"{config.input.max_pixel_size_ratio:g}); objects of a few metres vanish in the "
            "coarser image")


def run_pair(before: str | Path, after: str | Path, out_dir: str | Path,
             config: Config | None = None, *, allow_unregistered: bool = False,
             progress: Progress | None = None) -> PairResult:
    """Detect changes between ``before`` and ``after`` and write every output to ``out_dir``.

    Parameters
    ----------
    before, after : path
        Rasters GDAL can read, with a CRS. BEFORE's grid is the frame of every output.
    out_dir : path
        Created if needed; files are written atomically.
    config : Config, optional
        Defaults to ``Config()`` (the values of ``configs/default.yaml``).
    allow_unregistered : bool
        Go on with the reprojection alone when the shift cannot be measured reliably.
    progress : callable(done, total), optional
        Called after each processing block.

    Raises
    ------
    InputError, RegistrationError, OutputError
    ConfigError
        ``verifier.model`` names a file that is no usable model (checked before any work).
    """
    config = config or Config()
    if config.verifier.enabled:  # a bad model file fails before any work or output
        verifier.load_verifier(config.verifier.model)
    out = rio.ensure_output_dir(out_dir)
    with rio.staged_outputs(out) as stage:
        result = _run_pair_into(stage, before, after, config,
                                allow_unregistered=allow_unregistered, progress=progress)
        # published in this order: report.json, last, says the folder is complete
        files = rio.publish(stage, out, list(result.files.values()), last="report.json")
    return replace(result, out_dir=out, files=files)


def _run_pair_into(out: Path, before, after, config: Config, *, allow_unregistered: bool,
                   progress: Progress | None) -> PairResult:
    """:func:`run_pair`'s work, every output written into the folder ``out``."""
    from .io import export  # the output stage, last
    from .report import pictures as report
    from .io import export

    watch = _Stopwatch()
    threads = config.processing.threads or os.cpu_count() or 1
    cv2.setNumThreads(threads)
    nodata = config.input.nodata
    # GDAL_CACHEMAX is in bytes here (rasterio passes it to GDALSetCacheMax64); the default, 5 %
    # of RAM, would hold a large scene's blocks long after they are used
    with rasterio.Env(GDAL_NUM_THREADS=str(threads), GDAL_CACHEMAX=256 * 1024 * 1024), \
            rio.open_raster(before, "BEFORE", gsd_m=config.input.gsd_m) as b_ds, \
            rio.open_raster(after, "AFTER", gsd_m=config.input.gsd_m) as a_ds:
        check_pair(b_ds, a_ds, before, after, config)
        grid = rio.grid_of(b_ds)
        res = grid.mean_res_m
        inputs = [rio.describe(b_ds, "before"), rio.describe(a_ds, "after")]
        b_bands, a_bands = rio.matching_bands(b_ds, a_ds)

        with watch.stage("overlap"):
            lr_grid, factor = rio.decimated_grid(grid, 1024)
            b_valid_lr = rio.valid_lowres(b_ds, lr_grid, nodata=nodata)
            a_valid_lr = rio.valid_lowres(a_ds, lr_grid, nodata=nodata)
            overlap = float(a_valid_lr.mean())
            joint_lr = b_valid_lr & a_valid_lr
        if not joint_lr.any():
            raise InputError(f"{after}: no valid pixels overlap BEFORE ({before})")
        if overlap < config.min_overlap:
            raise InputError(f"{after}: covers only {overlap:.1%} of BEFORE ({before}); "
                             f"min_overlap is {config.min_overlap:.0%}")

        cfg_c = config.coregistration
        windows = sample_windows(joint_lr, factor, grid, window_px=cfg_c.window_px,
                                 grid_n=cfg_c.grid, min_valid_fraction=cfg_c.min_valid_fraction)
        shift = None
        with watch.stage("coregistration"):
            if cfg_c.enabled:
                shift = _measure_shift(b_ds, a_ds, grid, windows, config)
                if shift is None or shift.quality < cfg_c.min_quality:
                    why = ("no window with enough valid, textured pixels in both images"
                           if shift is None else
                           f"windows disagree or match weakly (quality {shift.quality:.2f} < "
                           f"min_quality {cfg_c.min_quality})")
                    if not allow_unregistered:
                        raise RegistrationError(
                            f"{after}: co-registration failed: {why}; use --allow-unregistered "
                            "to go on with the reprojection alone")
                    log.warning("co-registration failed (%s); going on unregistered", why)
                    shift = None if shift is None else Shift(0.0, 0.0, shift.quality,
                                                             "none (unregistered)", 0.0, shift.windows)
        dx, dy = (shift.dx_px, shift.dy_px) if shift is not None else (0.0, 0.0)
        if shift is not None:
            log.info("shift of AFTER: dx=%.3f px dy=%.3f px quality=%.2f", dx, dy, shift.quality)
        field = None
        if shift is not None and shift.method != "none (unregistered)" and cfg_c.mode == "local":
            with watch.stage("coregistration"):
                field = _measure_field(b_ds, a_ds, grid, joint_lr, factor, (dx, dy), config)
            log.info("local shift field: %d of %d nodes measured", int(field.measured.sum()),
                     field.measured.size)

        with rio.AfterOnGrid(a_ds, grid, shift_px=field or (dx, dy), nodata=nodata) as a_vrt:
            stripe_px = _stripe_px(b_ds, a_ds, config.processing.block_px)
            coarse = None
            if config.radiometry.level_m > 0 and config.radiometry.method != "none":
                with watch.stage("level"):
                    level_factor = max(1, min(int(config.radiometry.level_m / res // LEVEL_SAMPLES),
                                              min(grid.width, grid.height) // 8))
                    opener = _ReaderPool(before, after, grid, field or (dx, dy), nodata,
                                         shared=(b_ds, a_vrt), workers=threads,
                                         gsd_m=config.input.gsd_m)
                    try:
                        coarse = (_coarse_pair(opener, grid, level_factor, b_bands, a_bands,
                                               config, stripe_px), level_factor)
                    finally:
                        opener.close()
            with watch.stage("radiometry"):
                rad, sigma, noise, structure = _fit_radiometry(b_ds, a_vrt, windows, b_bands,
                                                               a_bands, res, config, coarse)
            del coarse  # both scenes' cells: not held through the passes
            log.info("radiometry %s; score unit %s; structure unit %s",
                     {k: v for k, v in rad.as_dict().items() if k != "level"},
                     np.round(sigma, 3).tolist(), structure and round(structure, 3))

            reach = mask_reach_px(config.difference, res)
            block = config.processing.block_px
            pass1 = list(rio.block_windows(grid.width, grid.height, block, reach))
            pass2 = list(rio.block_windows(grid.width, grid.height, block,
                                           blob_margin_px(config, res)))
            total = len(pass1) + len(pass2)
            writer = rio.MaskWriter(out / "change_mask.tif", grid)
            try:
                picture = report.picture_grid(
                    grid, max(256, (config.output.overlay_max_px - report.PANEL_GAP_PX) // 2))
                overview = report.Overview(grid, picture, len(b_bands), len(a_bands))

                def job(block_windows, readers):
                    b_r, a_r = readers
                    return _mask_block(b_r, a_r, *block_windows, b_bands, a_bands, rad, sigma,
                                       grid, config, watch, overview, noise, structure)

                opener = _ReaderPool(before, after, grid, field or (dx, dy), nodata,
                                     shared=(b_ds, a_vrt), workers=threads,
                                     gsd_m=config.input.gsd_m)
                changed: set[tuple[int, int]] = set()  # cores with a pixel of change
                try:
                    for i, (core, mask) in enumerate(opener.map(job, _stripes(pass1, stripe_px))):
                        writer.write(core, mask)
                        if (mask == 1).any():
                            changed.add((int(core.row_off), int(core.col_off)))
                        if progress:
                            progress(i + 1, total)
                finally:
                    opener.close()
                writer.flush()
                # pass 2 only where a blob can start: most of a large real scene holds no change
                busy = [item for item in pass2 if _may_hold_blobs(item, changed, block)]
                done = len(pass1) + len(pass2) - len(busy)
                found_in: dict[tuple[int, int], list[Detection]] = {}

                def find(block_windows, readers):
                    b_r, a_r, mask_r = readers
                    with watch.stage("blobs"):
                        return _detect_block(mask_r, b_r, a_r, *block_windows, b_bands, a_bands,
                                             rad, sigma, grid, config)

                finder = _ReaderPool(before, after, grid, field or (dx, dy), nodata,
                                     shared=(b_ds, a_vrt, writer), workers=threads,
                                     gsd_m=config.input.gsd_m, mask=writer)
                try:
                    for i, (core, found) in enumerate(finder.map(find, _stripes(busy, stripe_px))):
                        found_in[int(core.row_off), int(core.col_off)] = found
                        if progress:
                            progress(done + i + 1, total)
                finally:
                    finder.close()
                # in block order, whatever order the workers finished in
                detections: list[Detection] = [
                    det for core, _ in busy
                    for det in found_in[int(core.row_off), int(core.col_off)]]
                with watch.stage("write_mask"):
                    writer.close()
            except BaseException:
                writer.abort()
                raise

            detections.sort(key=lambda d: (round(d.blob.centroid_px[1]), d.blob.centroid_px[0]))
            detections = one_per_object(detections, max_overlap=config.split.max_overlap)
            detections = [d.with_id(f"d{i + 1:03d}") for i, d in enumerate(detections)]
            if config.moves.enabled:
                detections = link_moves(detections, grid.res_m,
                                        max_distance_m=config.moves.max_distance_m,
                                        size_tolerance=config.moves.size_tolerance)
            with watch.stage("report_images"):
                pictures = report.scene_pictures(b_ds, a_vrt, grid, detections, b_bands, a_bands,
                                                 config, nodata=nodata, overview=overview)

        result_report = {
            "version": __version__,
            "inputs": {"before": inputs[0], "after": inputs[1]},
            "grid": {"crs": grid.crs.to_string(), "width": grid.width, "height": grid.height,
                     "pixel_size_m": [round(grid.res_m[0], 4), round(grid.res_m[1], 4)],
                     "frame": "pixel" if grid.pixel_frame else "map"},
            "overlap": round(overlap, 4),
            "coregistration": {**report.coregistration_section(shift, grid, allow_unregistered),
                               "mode": cfg_c.mode if field is not None else "global",
                               **({"local": field.summary()} if field is not None else {})},
            "radiometry": {**rad.as_dict(), "score_unit": [round(float(s), 4) for s in sigma],
                           "structure_unit": None if structure is None else round(structure, 4)},
            "counts": report.counts(detections, config),
            "detections": len(detections),
            "config": config.model_dump(mode="json"),
            "config_digest": config.digest(),
        }
    with watch.stage("write_outputs"):
        files = {}
        name = "detections_px.geojson" if grid.pixel_frame else "detections.geojson"
        files[name] = export.write_geojson(out / name, detections, grid)
        files["overlay.png"] = report.write_overlay(out / "overlay.png", pictures)
        result_report["timings_s"] = dict(watch.timings)
        files["report.html"] = report.write_html(out / "report.html", result_report, detections, pictures)
        files["report.json"] = report.write_json(out / "report.json", result_report)
    files["change_mask.tif"] = out / "change_mask.tif"
    return PairResult(str(before), str(after), out, detections, shift, rad, overlap,
                      result_report, files)


def coregister_pair(before: str | Path, after: str | Path, config: Config | None = None
                    ) -> tuple[Shift | None, float]:
    """Only the co-registration stage: the global shift of AFTER on the BEFORE grid.

    Returns the :class:`Shift` (None when no window could be measured) and the overlap (share
    of BEFORE covered by valid AFTER). For notebooks and the co-registration benchmark.
    """
    config = config or Config()
    nodata = config.input.nodata
    with rio.open_raster(before, "BEFORE", gsd_m=config.input.gsd_m) as b_ds, \
            rio.open_raster(after, "AFTER", gsd_m=config.input.gsd_m) as a_ds:
        check_pair(b_ds, a_ds, before, after, config)
        grid = rio.grid_of(b_ds)
        lr_grid, factor = rio.decimated_grid(grid, 1024)
        a_valid = rio.valid_lowres(a_ds, lr_grid, nodata=nodata)
        joint = rio.valid_lowres(b_ds, lr_grid, nodata=nodata) & a_valid
        cfg = config.coregistration
        windows = sample_windows(joint, factor, grid, window_px=cfg.window_px, grid_n=cfg.grid,
                                 min_valid_fraction=cfg.min_valid_fraction)
        return _measure_shift(b_ds, a_ds, grid, windows, config), float(a_valid.mean())


def _measure_shift(b_ds, a_ds, grid, windows, config: Config) -> Shift | None:
    cfg = config.coregistration
    nodata = config.input.nodata
    samples = []
    with rio.AfterOnGrid(a_ds, grid, nodata=nodata) as a0:
        a_bands = list(range(1, a0.count + 1))
        for w in windows:
            b, vb = rio.read_window(b_ds, w, nodata=nodata)
            a, va = rio.read_window(a0, w, bands=a_bands, nodata=nodata)
            centre = (w.col_off + w.width / 2, w.row_off + w.height / 2)
            samples.append((centre, b, a, vb & va))
    band = config.input.band
    return estimate_shift(samples, max_shift_px=cfg.max_shift_px,
                          inlier_tolerance_px=cfg.inlier_tolerance_px,
                          agreement_px=cfg.agreement_px, refine_iterations=cfg.refine_iterations,
                          band=band if band and band <= min(len(s[1]) for s in samples) else None
                          ) if samples else None


def _measure_field(b_ds, a_ds, grid: rio.Grid, joint_lr: np.ndarray, factor: int,
                   global_shift: tuple[float, float], config: Config):
    """Local co-registration: a shift field from windows on a regular grid of nodes."""
    cfg = config.coregistration
    nodata = config.input.nodata
    spacing = max(cfg.local_grid_px, math.ceil(max(grid.width, grid.height) / cfg.local_max_nodes))
    half = min(cfg.local_window_px, spacing * 2) // 2
    cols = np.arange(spacing / 2, grid.width, spacing)
    rows = np.arange(spacing / 2, grid.height, spacing)
    samples = []
    with rio.AfterOnGrid(a_ds, grid, nodata=nodata) as a0:
        for r in rows:
            for c in cols:
                w = Window(int(c) - half, int(r) - half, 2 * half, 2 * half)
                w = w.intersection(Window(0, 0, grid.width, grid.height))
                sub = joint_lr[int(w.row_off) // factor:int(w.row_off + w.height) // factor + 1,
                               int(w.col_off) // factor:int(w.col_off + w.width) // factor + 1]
                if w.width < 64 or w.height < 64 or not sub.size or sub.mean() < cfg.min_valid_fraction:
                    continue
                b, vb = rio.read_window(b_ds, w, nodata=nodata)
                a, va = rio.read_window(a0, w)
                samples.append(((float(c), float(r)), b, a, vb & va))
    return estimate_field(samples, cols, rows, global_shift,
                          max_deviation_px=cfg.local_max_deviation_px,
                          neighbour_tolerance_px=cfg.inlier_tolerance_px)


def _fit_radiometry(b_ds, a_vrt, windows, b_bands, a_bands, res_m: float, config: Config,
                    coarse=None):
    """Radiometric map and the score's unit per band, from the matching windows.

    ``coarse`` ((before, after, valid), factor), both scenes averaged over ``factor`` pixels
    (:func:`_coarse_pair`), adds the local level field (``radiometry.level_m``) to the map;
    the unit is then measured on what the field leaves. The unit is the robust standard
    deviation of the smoothed difference (noise), raised where needed so that
    ``threshold_sigma`` units are at least ``min_contrast`` of BEFORE's range. With
    ``difference.local_noise_m`` the third result is the :class:`LocalNoise` of pass 1
    (its neighbourhood in pixels of ``res_m``), else None. With
    ``difference.structure_unit`` the fourth is the unit of the structure score
    (:func:`~pipeline.change.difference.structure_score`): that many robust standard deviations of
    the difference of the gradient magnitudes, else None.
    """
    nodata = config.input.nodata
    pairs = []
    windows = windows or [Window(0, 0, b_ds.width, b_ds.height)]
    for w in windows:
        b, vb = rio.read_window(b_ds, w, bands=b_bands, nodata=nodata)
        a, va = rio.read_window(a_vrt, w, bands=a_bands, nodata=nodata)
        pairs.append((*comparable(b, a), vb & va))
    flat = np.concatenate([b.reshape(b.shape[0], 1, -1) for b, _, _ in pairs], axis=2)
    flat_a = np.concatenate([a.reshape(a.shape[0], 1, -1) for _, a, _ in pairs], axis=2)
    flat_v = np.concatenate([v.reshape(1, -1) for _, _, v in pairs], axis=1)
    rad = fit_linear(flat, flat_a, flat_v, quantiles=config.radiometry.quantiles,
                     method=config.radiometry.method)
    if coarse is not None and rad.method != "none":
        rad = replace(rad, level=_fit_level(*coarse, rad, res_m, config))
    # noise of the smoothed difference, window by window (smoothing must not cross seams)
    d = config.difference
    diffs = [[] for _ in range(flat.shape[0])]
    sampled = [[] for _ in range(flat.shape[0])]  # on the local noise unit's sample lattice
    gradient_diffs = []
    step = noise_sample_step(local_radius_px(d, res_m))
    for w, (b, a, v) in zip(windows, pairs):
        pick = (slice(-int(w.row_off) % step, None, step), slice(-int(w.col_off) % step, None, step))
        # both smoothed once, for the difference's noise and the gradient's
        sb = [smooth(x, d.smoothing_px) for x in b]
        sa = [smooth(x, d.smoothing_px) for x in normalise(a, rad, w)]
        for k in range(len(sb)):
            diff = sa[k] - sb[k]  # smoothed_difference's
            diffs[k].append(diff[v])
            if d.local_noise_m > 0:
                sampled[k].append(diff[pick][v[pick]])
        if d.structure_unit > 0:
            gradient_diffs.append((gradient_magnitude(sa) - gradient_magnitude(sb))[v])
    pooled = [np.concatenate(parts) if parts else np.zeros(0, np.float32) for parts in diffs]
    sigma = [max(robust_sigma(p) if p.size else 1.4826, 1e-6) for p in pooled]
    # a seed must also be a visible contrast, not only a significant one: on very clean images
    # the noise alone would let faint roof glints and haze through
    floor = []
    for k in range(flat.shape[0]):
        v = flat[k][flat_v]
        lo, hi = fast_quantiles(v, (0.02, 0.98)) if v.size else (0.0, 0.0)
        floor.append(d.min_contrast * float(hi - lo) / d.threshold_sigma)
    noise = None
    if d.local_noise_m > 0:
        # the same samples as the local level's, so that a sensor's pattern (pan-sharpening,
        # JPEG blocks) biases both alike
        e2 = sum((np.concatenate(p) / np.float32(s)) ** 2
                 for p, s in zip(sampled, sigma)) / np.float32(len(sigma))
        ref = math.sqrt(float(fast_quantiles(e2, [d.local_noise_quantile])[0])) if e2.size else 1.0
        noise = LocalNoise(tuple(float(s) for s in sigma), tuple(floor), max(ref, 1e-6),
                           local_radius_px(d, res_m),
                           d.local_noise_quantile, tuple(d.local_noise_limits))
    sigma = np.maximum(np.asarray(sigma, np.float32), np.asarray(floor, np.float32))
    structure = None
    if d.structure_unit > 0:
        pooled = np.concatenate(gradient_diffs) if gradient_diffs else np.zeros(0, np.float32)
        structure = d.structure_unit * max(robust_sigma(pooled) if pooled.size else 1.0, 1e-3)
    return rad, sigma, noise, structure


def _coarse_pair(opener: _ReaderPool, grid: rio.Grid, factor: int, b_bands, a_bands,
                 config: Config, stripe_px: int):
    """Both scenes averaged over ``factor`` x ``factor`` cells of the BEFORE grid, read block by
    block on the pool's workers: (before, after (B, m, n) float32, valid (m, n) bool), a cell
    valid where at least half its pixels are in both."""
    nodata = config.input.nodata
    h, w = grid.height // factor, grid.width // factor
    step = max(1, config.processing.block_px // factor) * factor
    blocks = [(win, win) for r in range(0, h * factor, step) for c in range(0, w * factor, step)
              for win in [Window(c, r, min(step, w * factor - c), min(step, h * factor - r))]]
    out = [np.zeros((len(bands), h, w), np.float32) for bands in (b_bands, a_bands)]
    valid = np.ones((h, w), bool)

    def job(item, readers):
        win = item[0]
        return (rio.coarse_cells(*rio.read_window(readers[0], win, bands=b_bands, nodata=nodata),
                                 factor),
                rio.coarse_cells(*readers[1].read_rounded(win, bands=a_bands), factor))

    for win, cells in opener.map(job, _stripes(blocks, stripe_px)):
        at = (slice(int(win.row_off) // factor, int(win.row_off + win.height) // factor),
              slice(int(win.col_off) // factor, int(win.col_off + win.width) // factor))
        for k, (means, share) in enumerate(cells):
            out[k][(slice(None),) + at] = means
            valid[at] &= share >= 0.5
    return out[0], out[1], valid


def _fit_level(coarse, factor: int, rad: Radiometry, res_m: float, config: Config):
    """The :class:`~pipeline.change.radiometry.LevelField` of AFTER after ``rad``'s linear map, from
    both scenes averaged over ``factor`` pixels (:func:`_coarse_pair`; AFTER's cells are
    overwritten)."""
    b, a, valid = coarse
    b, a = comparable(b, a)
    # the linear map in place: on a 30000 px scene each of these arrays is 170 MB
    a *= np.asarray(rad.gains, np.float32)[:, None, None]
    a += np.asarray(rad.offsets, np.float32)[:, None, None]
    cell = max(1, round(config.radiometry.level_m / res_m / factor))
    return fit_level(b, a, valid, cell=cell, factor=(factor, factor))


def _mask_block(b_ds, a_vrt, core: Window, padded: Window, b_bands, a_bands, rad, sigma,
                grid: rio.Grid, config: Config, watch: _Stopwatch, overview=None,
                noise: LocalNoise | None = None, structure: float | None = None) -> np.ndarray:
    """Pass 1: the cleaned change mask of one block's core (0/1, 255 where invalid).

    The block is read with the mask's reach as margin, so its core is exactly what a
    whole-array run gives (:func:`pipeline.change.difference.block_change_mask`).
    """
    nodata = config.input.nodata
    with watch.stage("read"):
        b, vb = rio.read_window(b_ds, padded, bands=b_bands, nodata=nodata)
        a, va = rio.read_window(a_vrt, padded, bands=a_bands, nodata=nodata)
    r0 = int(core.row_off - padded.row_off)
    c0 = int(core.col_off - padded.col_off)
    sl = (slice(r0, r0 + int(core.height)), slice(c0, c0 + int(core.width)))
    if overview is not None:
        with watch.stage("report_images"):
            overview.add(int(core.col_off), int(core.row_off), b[(slice(None),) + sl], vb[sl],
                         a[(slice(None),) + sl], va[sl])
    with watch.stage("difference"):
        valid = vb & va
        b, a = comparable(b, a)
        mask = block_change_mask(b, normalise(a, rad, padded), valid, sigma, grid.mean_res_m,
                                 config.difference, noise,
                                 origin=(int(padded.row_off), int(padded.col_off)),
                                 structure_unit=structure)
        out = mask[sl].astype(np.uint8)
        out[~valid[sl]] = rio.MaskWriter.NODATA
    return out


def _detect_block(writer, b_ds, a_vrt, core: Window, padded: Window, b_bands,
                  a_bands, rad, sigma, grid: rio.Grid, config: Config) -> list[Detection]:
    """Pass 2: blobs of the mask whose top-left lies in ``core``, measured and classified.

    ``writer`` reads the pass-1 mask: the :class:`~pipeline.io.raster.MaskWriter` itself or,
    on a worker thread, one of its :class:`~pipeline.io.raster.MaskReader` handles. A blob
    that joins several objects at narrow necks is cut into them (``split``): its parts replace
    it when two or more of them are aircraft candidates, or when it is none and a part is.
    With the verifier on, an aircraft candidate is also measured as each image shows the object
    around its blob (``split.grow_m``); :func:`pipeline.detect.classify.one_per_object` keeps the
    larger of the two when the verifier keeps both.
    """
    nodata = config.input.nodata
    res = grid.mean_res_m
    d = config.difference
    objects = writer.read(padded) == 1
    blobs, labels = find_blobs(objects, None, grid.res_m, window=padded, core=core)
    ring_px = max(2, int(round(3.0 / res)))
    pad = max(ring_px + int(math.ceil(3 * d.smoothing_px)) + d.tolerance_px + 2,
              int(math.ceil(LOCAL_NOISE_M / res)))
    # a blob this much smaller than the block margin lies whole in every padded block that keeps
    # it, so a split sees the same pixels windowed and whole-array
    whole_px = blob_margin_px(config, res)
    largest = (config.max_footprint_m, max(c.width_m[1] for c in config.classes))
    sp = config.split
    narrowest = config.narrowest_aircraft_m
    core_width_m = sp.core_width_m or narrowest
    separation_m = sp.min_separation_m or narrowest
    full = Window(0, 0, grid.width, grid.height)
    v = config.verifier
    record = verifier.RECORD  # the training dump: every candidate kept and recorded
    judge = v.enabled or record is not None
    model = threshold = None
    if v.enabled and record is None:
        model = verifier.load_verifier(v.model)
        threshold = v.threshold if v.threshold is not None else model.threshold
    def too_small(region: Blob) -> bool:  # never measured as an object, a blob or a part
        return region.area_px < d.min_pixels or region.area_m2 < d.min_area_m2

    dets = []
    for blob in blobs:
        fits = may_hold_class(blob.length_m, blob.width_m, config.classes)
        c0, r0, c1, r1 = blob.bbox_px
        # larger than any class: several objects joined, tried only by the split
        oversize = (sp.enabled and not fits and c1 - c0 < whole_px and r1 - r0 < whole_px
                    and (blob.length_m > largest[0] or blob.width_m > largest[1]))
        if too_small(blob) or not (fits or oversize):
            continue
        chip = Window(c0 - pad, r0 - pad, c1 - c0 + 2 * pad, r1 - r0 + 2 * pad).intersection(full)
        # one pixel of the blob, to find it again among the chip's components
        ys, xs = np.nonzero(labels[r0 - int(padded.row_off):r1 - int(padded.row_off),
                                   c0 - int(padded.col_off):c1 - int(padded.col_off)] == blob.label)
        seed = (int(ys[0] + r0 - chip.row_off), int(xs[0] + c0 - chip.col_off))
        chip_mask = writer.read(chip)
        _, chip_labels = cv2.connectedComponents((chip_mask == 1).astype(np.uint8), connectivity=8)
        inside = chip_labels == chip_labels[seed]
        b, vb = rio.read_window(b_ds, chip, bands=b_bands, nodata=nodata)
        a, va = rio.read_window(a_vrt, chip, bands=a_bands, nodata=nodata)
        b, a = comparable(b, a)
        a = normalise(a, rad, chip)
        score = change_score(b, a, vb & va, sigma, smoothing_px=d.smoothing_px,
                             tolerance_px=d.tolerance_px)
        gain = local_noise_gain(b, a, vb & va & (chip_mask == 0), sigma, d.smoothing_px)
        offset = (int(chip.col_off), int(chip.row_off))

        def candidate(region_blob, region, *, shown_from=None) -> _Candidate | None:
            """The region's :class:`_Candidate`, None when it is no candidate. ``shown_from``:
            the region is the object as an image shows it around that blob's pixels, whose
            change score is its evidence and which measures it whole (parts of it may not
            have changed: no edge of the score cuts it)."""
            s = score[region if shown_from is None else shown_from]
            region_blob = replace(region_blob, mean_score=float(s.mean()), max_score=float(s.max()))
            strong = region_blob.mean_score * gain >= d.blob_sigma
            if not strong and not (judge and region_blob.mean_score * gain >= v.min_sigma):
                return None  # weak over its body (speckle the closing joined, soil, haze)
            ring = ring_around(region, chip_mask != 0, ring_px) & vb & va
            # judged by the verifier, an aircraft the classical rules would drop is measured
            # all the same, the rule it breaks one of its features
            det = classify_blob(region_blob, b, a, region, ring, config.classes,
                                score=score if shown_from is None else None,
                                res_m=grid.res_m, chip_offset_px=offset, rules=not judge)
            if det is None:
                return None
            rule = (classical_rule(region_blob, det, b, a, region, ring, score, grid.res_m)
                    if judge else None)
            if det.category != "aircraft" and (not strong or rule is not None):
                return None  # launchers: the classical path alone
            x = None
            if judge and det.category == "aircraft":
                x = verifier.candidate_features(region_blob, det, b, a, region, ring, score, gain,
                                                grid.res_m, d.blob_sigma, rule=rule,
                                                shown_from=shown_from)
            return _Candidate(det, strong and rule is None, x, rule)

        found = [c for c in [candidate(blob, inside) if fits else None] if c is not None]
        if sp.enabled:
            parts = split_at_necks(inside, res, core_width_m=core_width_m,
                                   min_separation_m=separation_m)
            if parts.max() > 1:
                pieces = []
                for k in range(1, int(parts.max()) + 1):
                    part = parts == k
                    if part.sum() < d.min_pixels:
                        continue
                    part_blob = replace(measure(part, offset, grid.res_m), label=blob.label)
                    if too_small(part_blob) or not may_hold_class(
                            part_blob.length_m, part_blob.width_m, config.classes):
                        continue
                    pieces += [c for c in [candidate(part_blob, part)] if c is not None]
                # decided on the candidates no classical rule drops (the classical path's);
                # the others only fill a gap, for the verifier to judge
                ok_found = [c for c in found if c.rule is None]
                ok_pieces = [c for c in pieces if c.rule is None]
                aircraft = sum(c.det.category == "aircraft" for c in ok_pieces)
                log.debug("blob at %s: %d parts, %d aircraft candidates among them",
                          blob.centroid_px, int(parts.max()), aircraft)
                if aircraft >= 2 or (not ok_found and (ok_pieces or not found)):
                    found = pieces
        if sp.grow_m and judge and any(c.det.category == "aircraft" for c in found):
            # the object as each image shows it around the blob: a mask cut into pieces where
            # the other image holds something as bright (a white aircraft over white runway
            # numbers) is one candidate again, centred on the object, for the verifier to judge
            ring0 = ring_around(inside, chip_mask != 0, ring_px) & vb & va
            grown = []
            lums = (b.mean(axis=0), a.mean(axis=0))
            for lum, other in zip(lums, lums[::-1]) if ring0.sum() >= 8 else ():
                region = inside | verifier.silhouette(inside, inside, lum, ring0, grid.res_m,
                                                      reach_m=sp.grow_m)
                if region.sum() < 1.25 * inside.sum() or any((region == r).all() for r in grown):
                    continue
                # mostly there in the other image too: an object that stayed, beside a change
                if stands_out(other, ring0, relative=0.05)[region].mean() >= 0.5:
                    continue
                grown.append(region)
                g_blob = replace(measure(region, offset, grid.res_m), label=blob.label)
                if may_hold_class(g_blob.length_m, g_blob.width_m, config.classes):
                    found += [c._replace(classical=False)  # the verifier's alone
                              for c in [candidate(g_blob, region, shown_from=inside)]
                              if c is not None and c.det.category == "aircraft"]
        judged = [i for i, c in enumerate(found) if c.features is not None]
        if judged:  # the features that weigh each candidate against the blob's others
            context = verifier.blob_context([found[i].det.blob.area_m2 for i in judged])
            for i, more in zip(judged, context):
                found[i] = found[i]._replace(features=np.append(found[i].features, more))
        for det, classical, x, _ in found:
            if x is not None:
                if record is not None:
                    record.append({"centroid_px": det.blob.centroid_px, "change": det.change,
                                   "classical": classical, "features": x.tolist()})
                elif model.probability(x) < threshold:
                    continue  # the verifier finds it unlike an aircraft that came or went
            dets.append(det)
    return dets
