"""Run one BEFORE/AFTER pair through every stage: the only module that knows their order.

    Scene (io) -> Registration (coreg) -> NoiseModel (change) -> pass 1: the change mask
    (change) -> pass 2: candidates and judge() (detect) -> outputs (report, io)

Both rasters are read block by block on the BEFORE grid (AFTER through a virtual warp that
also undoes the measured shift), so memory is bounded by the block size, not the scene size.
Each stage's algorithm lives in its own module; this one hands each stage the values the
previous ones made.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import rasterio

from . import io as rio
from .change.difference import mask_reach_px
from .change.mask import mask_block
from .change.noise import NoiseModel, coarse_pair, fit_noise_model, level_factor
from .change.radiometry import Radiometry
from .config import Config
from .coreg.register import Registration, matching_windows, measure_shift, register
from .coreg.shift import Shift
from .detect import fusion
from .detect.aircraft import AircraftDetector, load_detector
from .detect.candidates import (
    Rules,
    blob_margin_px,
    block_candidates,
    may_hold_blobs,
    sighting_candidates,
)
from .detect.classify import Detection, launcher_zone_categories
from .detect.judge import Judge, judge, settle
from .io import export
from .io.readers import ReaderPool, stripe_px, stripes
from .io.scene import Scene, open_scene
from .report import html, model, pictures
from .report.draw import PANEL_GAP_PX
from .timing import Stopwatch

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: GDAL's block cache for a run, bytes: the default, 5 % of RAM, would hold a large scene's
#: blocks long after they are used
GDAL_CACHE_BYTES = 256 * 1024 * 1024
#: GDAL's block cache while report.html's chips are read (each tile once or twice)
CHIP_CACHE_BYTES = 64 * 1024 * 1024


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


@dataclass(frozen=True)
class _Run:
    """How one run goes, besides its config: the caller's options and the run's own tools."""

    allow_unregistered: bool
    progress: Progress | None
    judge: Judge
    detector: AircraftDetector | None
    threads: int
    watch: Stopwatch


@dataclass(frozen=True)
class _Passes:
    """What the two block passes read and measure with: the pair, AFTER on the grid, the
    noise model, the config, and how the run goes."""

    scene: Scene
    registration: Registration
    a_vrt: rio.AfterOnGrid
    noise: NoiseModel
    config: Config
    run: _Run

    def pool(self, *extra) -> ReaderPool:
        """A pool whose workers read (BEFORE, AFTER on the grid, a reader of each ``extra``)."""
        return _pool(self.scene, self.registration, self.a_vrt, self.run.threads, *extra)

    @property
    def stripe_px(self) -> int:
        return stripe_px(self.scene.b_ds, self.scene.a_ds, self.config.processing.block_px)

    def progress(self, done: int, total: int) -> None:
        if self.run.progress:
            self.run.progress(done, total)


def _pool(scene: Scene, registration: Registration, a_vrt, threads: int, *extra) -> ReaderPool:
    """The scene's :meth:`~pipeline.io.scene.Scene.reader_pool` with the registration's offset."""
    return scene.reader_pool(registration.offset, a_vrt, threads, *extra)


def run_pair(before: str | Path, after: str | Path, out_dir: str | Path,
             config: Config | None = None, *, allow_unregistered: bool = False,
             progress: Progress | None = None, recorder: list | None = None,
             finish: Callable[[Path], list[Path]] | None = None) -> PairResult:
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
        Go on with the reprojection alone when the shift cannot be measured reliably (an
        :class:`~pipeline.errors.UnregisteredWarning`).
    progress : callable(done, total), optional
        Called after each processing block.
    recorder : list, optional
        Receives a record of every aircraft candidate the verifier would judge, and keeps
        them all (the training dump: :class:`~pipeline.detect.judge.Judge`).
    finish : callable(folder) -> list of paths, optional
        Makes more files from the run's, in the folder they are staged in (which holds them
        all, report.json included, and may rewrite report.json); the paths it returns are
        published with the run's, in the same step (the batch's
        :func:`~pipeline.batch.runner.pair_extras`).

    Raises
    ------
    InputError, RegistrationError, OutputError
    ConfigError
        ``verifier.model`` or ``detector.model`` names a file that is no usable model (checked
        before any work).
    """
    config = config or Config()
    threads = config.processing.threads or os.cpu_count() or 1
    # a bad model file fails before any work or output; the detector runs one thread per
    # block, the blocks in parallel
    detector = load_detector(config.detector.model, threads=1) if config.detector.enabled else None
    run = _Run(allow_unregistered, progress, Judge.from_config(config, recorder=recorder),
               detector, threads, Stopwatch())
    out = rio.ensure_output_dir(out_dir)
    with rio.staged_outputs(out) as stage:
        result = _run_pair_into(stage, before, after, config, run)
        made = list(result.files.values())
        if finish is not None:
            made += [f for f in finish(stage) if f not in made]
        # published in this order: report.json, last, says the folder is complete
        files = rio.publish(stage, out, made, last="report.json")
    return replace(result, out_dir=out, files=files)


def _run_pair_into(out: Path, before, after, config: Config, run: _Run) -> PairResult:
    """:func:`run_pair`'s work, every output written into the folder ``out``."""
    watch = run.watch
    cv2.setNumThreads(run.threads)
    with rasterio.Env(GDAL_NUM_THREADS=str(run.threads), GDAL_CACHEMAX=GDAL_CACHE_BYTES), \
            ExitStack() as stack:
        with watch.stage("overlap"):
            scene = stack.enter_context(
                open_scene(before, after, config, min_overlap=config.min_overlap))
        given, config = config, config.on_averaged_pixels(scene.grid.factor)
        run = _detector_for(scene, config, run)
        with watch.stage("coregistration"):
            registration = register(scene, config, allow_unregistered=run.allow_unregistered)
        a_vrt = stack.enter_context(scene.on_grid(registration.offset))
        noise = _noise_model(scene, registration, a_vrt, config, run)
        passes = _Passes(scene, registration, a_vrt, noise, config, run)
        overview = pictures.Overview(scene.grid, pictures.picture_grid(scene.grid, max(
            256, (config.output.overlay_max_px - PANEL_GAP_PX) // 2)),
            len(scene.b_bands), len(scene.a_bands))
        found, sighted, screened = _detect(passes, out / "change_mask.tif", overview)
        detections = settle(found, scene.grid.res_m, config)
        detections = launcher_zone_categories(detections, scene.grid, config.launcher_zones)
        with watch.stage("report_images"):
            shown = pictures.scene_pictures(
                scene.b_ds, a_vrt, scene.grid, detections, b_bands=scene.b_bands,
                a_bands=scene.a_bands, config=config, nodata=scene.nodata, overview=overview,
                open_readers=partial(scene.open_aligned, registration.offset))
        result_report = model.pair_report(scene, registration, noise, detections, given)
        result_report["detector"] = _detector_report(passes, sighted)
        result_report["screen"] = screened
    # report.html reads a chip of both images per detection, scattered over the scene: with
    # GDAL's default block cache (5 % of RAM) the tiles they touch were kept, 1 GB more at
    # 30000 px with 1311 detections
    with watch.stage("write_outputs"), rasterio.Env(GDAL_CACHEMAX=CHIP_CACHE_BYTES):
        files = {}
        name = "detections_px.geojson" if scene.grid.pixel_frame else "detections.geojson"
        files[name] = export.write_geojson(out / name, detections, scene.grid)
        files["overlay.png"] = pictures.write_overlay(out / "overlay.png", shown)
        result_report["timings_s"] = dict(watch.timings)
        files["report.html"] = html.write_html(out / "report.html", result_report, detections,
                                               shown)
        files["report.json"] = model.write_json(out / "report.json", result_report)
    files["change_mask.tif"] = out / "change_mask.tif"
    shift = registration.shift and registration.shift.scaled(scene.grid.factor)
    return PairResult(str(before), str(after), out, detections, shift, noise.radiometry,
                      scene.validity.overlap, result_report, files)


def _noise_model(scene: Scene, registration: Registration, a_vrt, config: Config,
                 run: _Run) -> NoiseModel:
    """The noise model, with the level field's coarse pass read on the run's workers while the
    linear map is fitted on this thread (it needs the cells only after that)."""
    cells = reading = None
    if config.radiometry.level_m > 0 and config.radiometry.method != "none":
        block_px = config.processing.block_px

        def read_cells():
            with run.watch.stage("level"):
                return coarse_pair(_pool(scene, registration, a_vrt, run.threads), scene,
                                   level_factor(scene, config), block_px=block_px,
                                   stripe_px=stripe_px(scene.b_ds, scene.a_ds, block_px))

        cells = read_cells  # one worker reads through the run's handles: when the fit asks
        if run.threads > 1:
            ex = ThreadPoolExecutor(1, thread_name_prefix="level")
            reading = ex.submit(read_cells)
            ex.shutdown(wait=False)
            cells = reading.result
    try:
        with run.watch.stage("radiometry"):
            # the cells of both scenes go with the future: not held through the passes
            noise = fit_noise_model(scene, a_vrt, registration.windows, config, coarse=cells)
    finally:
        if reading is not None:
            wait([reading])  # (on an error here, before the scene's files are closed)
    log.info("radiometry %s; score unit %s; structure unit %s",
             {k: v for k, v in noise.radiometry.as_dict().items() if k != "level"},
             np.round(noise.unit, 3).tolist(),
             noise.structure_unit and round(noise.structure_unit, 3))
    return noise


def _detector_for(scene, config: Config, run: _Run) -> _Run:
    """``run`` without the detector (and with the verifier the difference alone calls for) when
    the scene's pixels are coarser than ``detector.max_pixel_m``."""
    res, most = scene.grid.mean_res_m, config.detector.max_pixel_m
    if run.detector is None or res <= most:
        return run
    log.warning("detector not run: pixels of %.2f m are coarser than detector.max_pixel_m "
                "(%g m); the difference alone", res, most)
    return replace(run, detector=None,
                   judge=Judge.from_config(config, recorder=run.judge.recorder, detector=False))


def _detector_report(passes: _Passes, sighted: dict) -> dict:
    """report.json's ``detector``: whether the detector ran, why not, and what it saw."""
    d, run = passes.config.detector, passes.run
    if sighted:
        counts = {k: v for k, v in sighted.items() if k != "looked_share"}
        return {"used": True, "resolution_m": d.resolution_m, "where": d.where,
                "looked_share": sighted["looked_share"], "sightings": counts}
    if not d.enabled:
        reason = "detector.enabled is false"
    elif run.detector is None:
        reason = (f"pixels of {passes.scene.grid.mean_res_m:.2f} m are coarser than "
                  f"detector.max_pixel_m ({d.max_pixel_m:g} m)")
    else:
        reason = "the verifier does not read the detector's evidence"
    return {"used": False, "reason": reason}


def _detect(passes: _Passes, mask_path: Path, overview) -> tuple[list[Detection], dict, dict]:
    """Pass 1 writes the change mask to ``mask_path`` (and fills ``overview``); pass 2 finds
    the detections in it, in block order. Also returns the detector's sighting counts
    (``before``, ``after``, ``unpartnered``) and ``looked_share`` (empty when it did not run),
    and report.json's ``screen``: ``difference.screen`` and the share of pass 1's pixels it
    kept."""
    grid, config = passes.scene.grid, passes.config
    block = config.processing.block_px
    pass1 = list(rio.block_windows(grid.width, grid.height, block,
                                   mask_reach_px(config.difference, grid.mean_res_m)))
    pass2 = list(rio.block_windows(grid.width, grid.height, block,
                                   blob_margin_px(config, grid.mean_res_m)))
    before = passes.scene.inputs()["before"]
    writer = rio.MaskWriter(mask_path, grid, threads=passes.run.threads,
                            input_shape=(before["height"], before["width"]))
    sighter = _sighter(passes)
    try:
        changed, looked = _mask_pass(passes, pass1, writer, overview, sighter,
                                     total=len(pass1) + len(pass2))
        writer.flush()
        sightings, seen = _sightings(passes, sighter)
        # pass 2 only where a blob can start or a sighting lies: most of a large real scene
        # holds no change
        busy = [item for item in pass2
                if may_hold_blobs(item, changed, block) or _core_key(item[0]) in seen]
        detections = _find_pass(passes, busy, writer, (sightings, seen),
                                done=len(pass1) + len(pass2) - len(busy))
        with passes.run.watch.stage("write_mask"):
            writer.close()
    except BaseException:
        writer.abort()
        raise
    screened = {"share": config.difference.screen, "looked_share": round(looked, 4)}
    if sightings is None:
        return detections, {}, screened
    return detections, {"before": len(sightings.before), "after": len(sightings.after),
                        "unpartnered": sum(map(len, seen.values())),
                        "looked_share": round(sighter.looked_share, 4)}, screened


def _core_key(core) -> tuple[int, int]:
    return int(core.row_off), int(core.col_off)


#: with ``detector.where: changes``, the detector looks this far beyond half the largest
#: footprint from where anything may have changed: the centre of an aircraft any part of
#: which changed lies in its window, with some ground around it
LOOK_CONTEXT_M = 16.0


def _sighter(passes: _Passes) -> fusion.Sighter | None:
    """The detector's sighter for pass 1, when the detector is on and its evidence is used."""
    scene, run = passes.scene, passes.run
    if run.detector is None or not run.judge.sights:
        return None
    levels = (fusion.input_levels(scene.b_ds, scene.b_bands, scene.nodata),
              fusion.input_levels(scene.a_ds, scene.a_bands, scene.nodata))
    d, res = passes.config.detector, scene.grid.mean_res_m
    reach = (None if d.where == "scene" else
             math.ceil((0.5 * passes.config.max_footprint_m + LOOK_CONTEXT_M) / res))
    return fusion.Sighter(run.detector, res, d.resolution_m, levels, reach)


def _sightings(passes: _Passes, sighter: fusion.Sighter | None):
    """The scene's sightings and the unpartnered ones by the pass-2 core holding their centre."""
    if sighter is None:
        return None, {}
    d = passes.config.detector
    sightings = sighter.sightings(threshold=d.threshold, partner_share=d.partner_share,
                                  size_tolerance=d.size_tolerance)
    block = passes.config.processing.block_px
    seen: dict[tuple[int, int], list] = {}
    for s in sightings.unpartnered():
        col, row = s.centre
        seen.setdefault((int(row) // block * block, int(col) // block * block), []).append(s)
    log.info("detector: %d sightings in BEFORE, %d in AFTER, %d without a partner",
             len(sightings.before), len(sightings.after), sum(map(len, seen.values())))
    return sightings, seen


def _mask_pass(passes: _Passes, blocks: list, writer, overview, sighter, *, total: int
               ) -> tuple[set[tuple[int, int]], float]:
    """Pass 1: each block's change mask written (and the detector's sightings made); the
    (row, col) offsets of the cores with a pixel of change returned, and the share of the
    blocks' pixels (margins included) the screen kept for the mask's full arithmetic."""
    def job(windows, readers):
        return mask_block(readers, windows, scene=passes.scene, noise=passes.noise,
                          config=passes.config, watch=passes.run.watch,
                          observe=lambda core, *parts: overview.add(
                              int(core.col_off), int(core.row_off), *parts),
                          sight=sighter and sighter.sight,
                          sight_reads_mask=sighter is not None and sighter.reach_px is not None)

    changed: set[tuple[int, int]] = set()
    pool = passes.pool()
    looked = 0.0
    for i, (core, (mask, looked_px)) in enumerate(pool.map(job, stripes(blocks,
                                                                        passes.stripe_px))):
        looked += looked_px
        writer.write(core, mask)
        if (mask == 1).any():
            changed.add((int(core.row_off), int(core.col_off)))
        passes.progress(i + 1, total)
    padded = sum(int(w.width) * int(w.height) for _, w in blocks)
    return changed, looked / max(padded, 1)


def _find_pass(passes: _Passes, blocks: list, writer, sighted, *, done: int
               ) -> list[Detection]:
    """Pass 2: the detections of the blocks that may hold a blob or an unpartnered sighting
    (``sighted``: the :class:`~pipeline.detect.fusion.Sightings` and those by core), in block
    order."""
    scene, run = passes.scene, passes.run
    sightings, seen = sighted
    rules = Rules.from_config(passes.config, scene.grid, judging=run.judge.judging)

    def job(windows, readers):
        with run.watch.stage("blobs"):
            found = list(block_candidates(readers, windows, scene=scene, noise=passes.noise,
                                          rules=rules))
        with run.watch.stage("sightings"):
            found += sighting_candidates(readers, seen.get(_core_key(windows[0]), []),
                                         scene=scene, noise=passes.noise, rules=rules)
        return [det for f in found for det in judge(fusion.with_sightings(f, sightings),
                                                     run.judge)]

    found_in: dict[tuple[int, int], list[Detection]] = {}
    pool = passes.pool(writer)
    for i, (core, found) in enumerate(pool.map(job, stripes(blocks, passes.stripe_px))):
        found_in[int(core.row_off), int(core.col_off)] = found
        passes.progress(done + i + 1, done + len(blocks))
    # in block order, whatever order the workers finished in
    return [det for core, _ in blocks for det in found_in[int(core.row_off), int(core.col_off)]]


def coregister_pair(before: str | Path, after: str | Path, config: Config | None = None
                    ) -> tuple[Shift | None, float]:
    """Only the co-registration stage: the global shift of AFTER on the BEFORE grid.

    Returns the :class:`~pipeline.coreg.shift.Shift` in BEFORE's own pixels (None when no
    window could be measured) and the overlap (share of BEFORE covered by valid AFTER). For
    notebooks and the co-registration benchmark.
    """
    config = config or Config()
    with open_scene(before, after, config) as scene:
        shift = measure_shift(scene, matching_windows(scene, config), config)
        return shift and shift.scaled(scene.grid.factor), scene.validity.overlap
