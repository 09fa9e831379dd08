"""Command line: ``detect-changes`` and ``detect-changes-eval``. Parses, calls the library, maps
errors to exit codes. No image logic lives here."""
from __future__ import annotations

import contextlib
import logging
import sys
import traceback
import warnings
from pathlib import Path

import click
import rasterio.errors

from . import __version__
from .config import load_config
from .errors import PipelineError, PipelineWarning

EXIT_OK, EXIT_BATCH_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"detect-changes: error: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for chatty in ("rasterio", "pyogrio"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # the library warns (PipelineWarning: going on unregistered...); the command line logs
    show = warnings.showwarning

    def log_pipeline_warnings(message, category, *args, **kwargs):
        if issubclass(category, PipelineWarning):
            logging.getLogger("pipeline").warning("%s", message)
        else:
            show(message, category, *args, **kwargs)
    warnings.showwarning = log_pipeline_warnings


def _progress_bar(enabled: bool, unit: str = "block", desc: str = "detect"):
    """A tqdm bar on a terminal; line-oriented log messages otherwise (cron, CI)."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm
        state = {}

        def update(done, total):
            bar = state.get("bar") or state.setdefault("bar", tqdm(total=total, unit=unit,
                                                                  desc=desc, leave=False))
            bar.update(done - bar.n)
            if done == total:
                bar.close()
        return update
    log = logging.getLogger("pipeline.progress")

    def update(done, total):
        if done == total or done % max(1, total // 10) == 0:
            log.info("%ss %d/%d", unit, done, total)
    return update


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("before", required=False, type=click.Path(path_type=Path))
@click.argument("after", required=False, type=click.Path(path_type=Path))
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder (created if missing): detections.geojson, report.json, "
                   "report.html, change_mask.tif, overlay.png, detections.gpkg, item.json; for "
                   "a batch one such folder per pair plus summary.csv, summary.json, "
                   "detections.gpkg, catalog.json, index.html.")
@click.option("--manifest", type=click.Path(path_type=Path),
              help="Batch: CSV with a header before,after[,name,before_date,after_date,...].")
@click.option("--series", type=click.Path(path_type=Path),
              help="Batch: a folder of dated images of one site (or a CSV image[,date]); each "
                   "image against the previous one, plus timeline.csv and timeline.png.")
@click.option("--stac", type=click.Path(path_type=Path),
              help="Batch: STAC items (an ItemCollection, an item, or a folder of item files) "
                   "of one or more sites; each acquisition against the previous one of its site, "
                   "dated by the item's datetime. The image is the asset --asset names, else the "
                   "item's only asset with role 'data', else with role 'visual'.")
@click.option("--group-by", "group_by", metavar="PROPERTY", default=None,
              help="--stac: the item property naming its site (e.g. site), or 'footprint' "
                   "(items whose images overlap are one site); default stac.group_by, else all "
                   "items must be of one site.")
@click.option("--asset", metavar="KEY", default=None,
              help="--stac: the key of the image asset in every item (default stac.asset).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Batch: local dask worker processes (default: one per core).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Batch: run on an existing dask cluster, e.g. tcp://10.0.0.5:8786.")
@click.option("--memory-limit", default="auto", show_default=True,
              help="Batch: memory limit of each local worker, e.g. 4GB.")
@click.option("--force", is_flag=True, help="Batch: redo every pair, even complete ones.")
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path),
              help="YAML configuration (footprint classes, thresholds); default: configs/default.yaml.")
@click.option("--overwrite", is_flag=True,
              help="Write into an output folder that already holds files (ours are replaced, "
                   "others left alone); without it such a folder is refused.")
@click.option("--gsd", "gsd_m", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="METRES",
              help="Pixel size of plain images without georeference (JPEG, PNG): they are "
                   "compared in pixel coordinates and detections go to detections_px.geojson.")
@click.option("--nodata", type=float, default=None,
              help="Value to treat as nodata in inputs that declare none (e.g. 0).")
@click.option("--allow-unregistered", is_flag=True,
              help="Go on with the reprojection alone when the shift cannot be measured reliably.")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="Threads for GDAL and OpenCV per pair (0 = all cores, shared out in a batch).")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(__version__, prog_name="detect-changes")
def main(*, before, after, out_dir, manifest, series, stac, group_by, asset, workers, scheduler,
         memory_limit, force, config_path, overwrite, gsd_m, nodata, allow_unregistered, threads,
         quiet, verbose, debug):
    """Find aircraft and launchers that appeared or disappeared between BEFORE and AFTER.

    BEFORE and AFTER are rasters GDAL reads (GeoTIFF, COG, JPEG2000, VRT) with a CRS; they may
    differ in CRS, pixel size, extent, bands and data type. AFTER is reprojected onto the BEFORE
    grid, its residual shift measured and removed, its radiometry normalised; the change mask is
    cut into blobs whose footprint in metres is matched against the classes of the config.

    A batch (--manifest, --series or --stac) runs many pairs on dask, skips pairs already
    complete (--force redoes them) and records a failing pair without stopping the others.

    \b
    Examples:
      detect-changes sample_tiles/hmeimim/before.tif sample_tiles/hmeimim/after.tif --out out/hmeimim
      detect-changes --manifest pairs.csv --out out/batch --workers 4
      detect-changes --stac items.json --group-by site --out out/stac

    Exit codes: 0 done; 1 a pair of a batch failed (the others are written); 2 bad usage or
    unusable input (one line on stderr naming the file).
    """
    _setup_logging(verbose, quiet)
    sources = {"--manifest": manifest, "--series": series, "--stac": stac}
    batch = any(v is not None for v in sources.values())
    usage = _usage_problem(before=before, after=after, sources=sources,
                           workers=workers, scheduler=scheduler, force=force) or (
        "--group-by and --asset apply to --stac" if stac is None and (group_by or asset)
        else None) or (
        "--overwrite applies to one pair; a batch resumes, and --force redoes its pairs"
        if batch and overwrite else None)
    if usage:
        _fail(usage, False)
    try:
        given = {"input": {"nodata": nodata, "gsd_m": gsd_m}, "processing": {"threads": threads},
                 "stac": {"group_by": group_by, "asset": asset}}
        config = load_config(config_path).with_overrides(
            {section: {k: v for k, v in keys.items() if v is not None}
             for section, keys in given.items()}, source="command line")
        if batch:
            _run_batch(sources, out_dir, config, workers=workers, scheduler=scheduler,
                       memory_limit=memory_limit, force=force,
                       allow_unregistered=allow_unregistered, quiet=quiet)
            return
        from .batch.runner import PairJob, run_job
        if not overwrite:
            from .io import refuse_used_output_dir
            refuse_used_output_dir(out_dir)
        result = run_job(PairJob(Path(out_dir).absolute().name, before, after), out_dir, config,
                         in_batch=False, allow_unregistered=allow_unregistered,
                         progress=_progress_bar(not quiet))
    except PipelineError as err:
        _fail(err.line(), debug)
    except rasterio.errors.RasterioError as err:
        _fail(f"reading failed: {str(err).splitlines()[0]}", debug)
    except MemoryError:
        _fail("out of memory: lower processing.block_px in the config", debug)
    counts = result.report["counts"]
    summary = ", ".join(f"{cat} +{c['appeared']}/-{c['disappeared']}" for cat, c in counts.items())
    co = result.report["coregistration"]
    click.echo(f"{len(result.detections)} detections ({summary}); shift "
               f"{co['shift_x_px']:+.2f}, {co['shift_y_px']:+.2f} px (quality {co['quality']:.2f}); "
               f"outputs in {result.out_dir}")


def _usage_problem(*, before, after, sources, workers, scheduler, force) -> str | None:
    given = [k for k, v in sources.items() if v is not None]
    if len(given) > 1:
        return f"give {' or '.join(given)}, not {'both' if len(given) == 2 else 'all three'}"
    if given:
        if before is not None or after is not None:
            return "give either BEFORE AFTER or a batch (--manifest / --series / --stac), not both"
        if workers and scheduler:
            return "--workers starts a local cluster; leave it out with --scheduler"
        return None
    if before is None or after is None:
        return ("give BEFORE and AFTER, or --manifest PAIRS.csv, or --series FOLDER, or --stac "
                "ITEMS.json (see --help)")
    if workers or scheduler or force:
        return ("--workers, --scheduler and --force apply to a batch (--manifest / --series / "
                "--stac)")
    return None


def _run_batch(sources, out_dir, config, *, quiet, **options) -> None:
    import distributed  # noqa: F401  (sets up its loggers on import; quieted below)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .batch.runner import read_manifest, run_batch, series_jobs
    from .batch.stac import stac_jobs

    logging.getLogger("distributed").setLevel(logging.WARNING)
    manifest, series, stac = sources.values()
    jobs = read_manifest(manifest) if manifest is not None else series_jobs(series) \
        if series is not None else stac_jobs(stac, group_by=config.stac.group_by,
                                              asset=config.stac.asset)
    dated = series is not None or stac is not None
    bar = not quiet and sys.stderr.isatty()  # else the per-pair log lines are the progress
    with logging_redirect_tqdm() if bar else contextlib.nullcontext():
        result = run_batch(jobs, out_dir, config, timeline=True if dated else None,
                           progress=_progress_bar(bar, "pair", "batch") if bar else None, **options)
    for row in result.failed:
        click.echo(f"detect-changes: pair {row['name']} failed: {row['error']}", err=True)
    click.echo(f"{len(result.rows)} pairs: {result.count('ok')} done, {result.count('skipped')} "
               f"already complete, {result.count('failed')} failed; summary in "
               f"{result.files['summary.csv']}")
    if result.failed:
        sys.exit(EXIT_BATCH_FAILED)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("truth", type=click.Path(path_type=Path))
@click.argument("detections", type=click.Path(path_type=Path))
@click.option("--max-distance-m", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Largest centroid distance of a match, metres (or a quarter "
              "of the truth object's length when that is larger).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Also write both tables to this JSON file.")
def eval_main(truth, detections, max_distance_m, json_path):
    """Score DETECTIONS (GeoJSON) against TRUTH (GeoJSON, same schema).

    Prints which class each matched truth object was detected as (a confusion table, with
    precision and recall of each class over the matched pairs), then precision, recall and F1
    per category and change; features match one to one by the distance between their
    centroids, within the same category and change (for the classes: the same change).
    """
    import json

    from .evaluate import (class_confusion, evaluate, format_confusion, format_table,
                           load_features, scores_as_dict)
    from .io.outputs import write_text_atomic

    try:
        truth_features, found = load_features(truth), load_features(detections)
        scores = evaluate(truth_features, found, max_distance_m)
        confusion = class_confusion(truth_features, found, max_distance_m)
        if json_path is not None:
            write_text_atomic(json_path, json.dumps(scores_as_dict(scores, confusion), indent=1))
    except PipelineError as err:
        _fail(err.line(), False)
    except OSError as err:
        _fail(f"{json_path}: cannot be written ({err.strerror or err})", False)
    click.echo(format_confusion(confusion) + "\n")
    click.echo(format_table(scores))


if __name__ == "__main__":
    main()
