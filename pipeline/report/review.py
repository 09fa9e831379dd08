"""Review: look at a finished run's detections against the pixels and record an analyst's verdicts.

The functions behind ``notebooks/review.ipynb``: load an output folder, rebuild BEFORE, AFTER (on
the BEFORE grid, its shift undone), the change score and the mask from what ``report.json``
records, cut chips around detections, filter them, and keep verdicts (``confirmed`` /
``rejected``) in ``review.csv`` next to ``detections.geojson``. The confirmed detections become
a truth file that ``detect-changes-eval`` reads.
"""
from __future__ import annotations

import csv
import io
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from .. import io as rio
from ..config import Config, config_from_mapping
from ..errors import InputError
from .draw import CHANGE_COLOURS, detection_label, display_limits, to_display
from .model import ReportModel, as_report, load_report
from .pictures import picture_grid
from .score import ScoreRecipe, score_chip

VERDICTS = ("confirmed", "rejected")
REVIEW_CSV = "review.csv"
REVIEW_TRUTH = "review_truth.geojson"
CSV_FIELDS = ("id", "verdict", "category", "class", "change", "score")
_OUTPUT_FILES = {"detections": "detections.geojson", "report_json": "report.json",
                 "report_html": "report.html", "change_mask": "change_mask.tif",
                 "overlay": "overlay.png", "review_csv": REVIEW_CSV}


@dataclass(frozen=True)
class Outputs:
    """One output folder of ``detect-changes``, loaded.

    ``detections`` are the GeoJSON features of ``detections.geojson``; ``report`` is
    ``report.json`` (:class:`pipeline.report.model.ReportModel`); ``paths`` maps ``detections``, ``report_json``, ``report_html``,
    ``change_mask``, ``overlay``, ``review_csv``, ``truth`` and the inputs ``before`` and
    ``after`` (None when the raster cannot be found) to paths.
    """

    out_dir: Path
    detections: list[dict]
    report: ReportModel
    paths: dict[str, Path | None] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        """The effective configuration of the run."""
        return config_from_mapping(self.report.config.model_dump(exclude_unset=True),
                                   str(self.paths["report_json"]))

    @property
    def ids(self) -> list[str]:
        return [f["properties"]["id"] for f in self.detections]

    def feature(self, det_id: str) -> dict:
        """The feature of detection ``det_id``; KeyError when there is none."""
        for f in self.detections:
            if f["properties"]["id"] == det_id:
                return f
        raise KeyError(f"{self.out_dir}: no detection {det_id!r}")


def _find_input(recorded: str | None, out_dir: Path) -> Path | None:
    """A raster path as report.json records it (relative to where the run started), found again.

    Tries it as given (absolute, or relative to the working directory), then relative to the
    output folder and each folder above it: ``out/hmeimim`` inside a checkout finds
    ``sample_tiles/...`` from a notebook started in ``notebooks/``.
    """
    if not recorded:
        return None
    p = Path(recorded)
    if p.exists():
        return p.resolve()
    if p.is_absolute():
        return None
    for base in (out_dir, *out_dir.parents):
        if (base / p).exists():
            return (base / p).resolve()
    return None


def load_outputs(out_dir: str | Path, *, before: str | Path | None = None,
                 after: str | Path | None = None) -> Outputs:
    """Load ``detections.geojson`` and ``report.json`` of an output folder.

    Parameters
    ----------
    out_dir : path
        A folder written by ``detect-changes`` (one pair).
    before, after : path, optional
        The input rasters, when they no longer lie where report.json says.

    Raises
    ------
    InputError
        When the folder lacks either file or they cannot be read.
    """
    out = Path(out_dir).resolve()
    paths: dict[str, Path | None] = {k: out / v for k, v in _OUTPUT_FILES.items()}
    paths["truth"] = out / REVIEW_TRUTH
    for key in ("detections", "report_json"):
        if not paths[key].exists():
            raise InputError(f"{paths[key]}: not found; is {out} an output folder of "
                             "detect-changes?", path=paths[key])
    try:
        fc = json.loads(paths["detections"].read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{paths['detections']}: cannot be read ({err})") from None
    if not isinstance(fc, dict) or fc.get("type") != "FeatureCollection":
        raise InputError(f"{paths['detections']}: not a GeoJSON FeatureCollection")
    report = load_report(paths["report_json"])
    for role, given in (("before", before), ("after", after)):
        paths[role] = (Path(given).resolve() if given is not None
                       else _find_input(getattr(report.inputs, role).path, out))
    return Outputs(out, list(fc.get("features", [])), report, paths)


# --- the scene, rebuilt ---------------------------------------------------------------------

@dataclass
class Pair:
    """BEFORE and AFTER of a run, opened, with AFTER on the BEFORE grid as the pipeline saw it.

    ``after`` reads full-resolution windows with the run's shift undone (one shift, or the
    local shift field when the run measured one); ``after_picture`` is a GDAL warp with one
    shift, for decimated pictures. ``before_bands``/``after_bands`` index the data bands.
    """

    before: object
    after: object
    after_picture: object
    grid: rio.Grid
    before_bands: list[int]
    after_bands: list[int]
    nodata: float | None


def run_shift(report: ReportModel | Mapping):
    """The shift a run removed from AFTER: a (dx, dy) pair, BEFORE pixels, or the local shift
    field (:class:`pipeline.coreg.shift.ShiftField`) rebuilt from report.json."""
    co = as_report(report).coregistration
    if not co.applied:
        return (0.0, 0.0)
    local = co.local
    if local is None:
        return co.shift_removed_px()
    from ..coreg.shift import ShiftField

    dx, dy = np.asarray(local.field_dx_px, float), np.asarray(local.field_dy_px, float)
    measured = np.ones(dx.shape) if local.measured_mask is None else local.measured_mask
    return ShiftField(np.asarray(local.grid_cols_px, float), np.asarray(local.grid_rows_px, float),
                      dx, dy, np.asarray(measured, bool), dx, dy)


@contextmanager
def open_pair(outputs: Outputs) -> Iterator[Pair]:
    """Open BEFORE and AFTER of a run (see :class:`Pair`); closes them on leaving."""
    for role in ("before", "after"):
        if outputs.paths.get(role) is None:
            recorded = getattr(outputs.report.inputs, role).path
            raise InputError(f"{role.upper()} raster {recorded!r} of {outputs.out_dir} not found; "
                             f"pass {role}=PATH to load_outputs")
    one_shift = outputs.report.coregistration.shift_removed_px()
    nodata = outputs.report.config.input.nodata
    with rio.open_raster(outputs.paths["before"], "BEFORE") as b_ds, \
            rio.open_raster(outputs.paths["after"], "AFTER") as a_ds:
        grid = rio.grid_of(b_ds)
        with rio.AfterOnGrid(a_ds, grid, shift_px=run_shift(outputs.report), nodata=nodata) as after, \
                rio.warped_onto(a_ds, grid, shift_px=one_shift, nodata=nodata) as picture:
            yield Pair(b_ds, after, picture, grid, rio.data_bands(b_ds),
                       list(range(1, after.count + 1)), nodata)


def _read_picture(ds, bands, window: Window, shape: tuple[int, int], nodata
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``window`` of ``ds`` averaged down to ``shape`` (rows, cols), with its validity."""
    data = ds.read(bands, window=window, out_shape=(len(bands), *shape),
                   resampling=Resampling.average, out_dtype="float32")
    valid = ds.dataset_mask(window=window, out_shape=shape, resampling=Resampling.nearest) > 0
    if ds.nodata is None and nodata is not None:
        valid &= ~np.all(data == nodata, axis=0)
    valid &= np.all(np.isfinite(data), axis=0)
    data[:, ~valid] = 0
    return data, valid


def _pool_index(start: int, stop: int, origin: int, factor: float) -> np.ndarray:
    return np.floor((np.arange(start, stop) - origin) * factor).astype(np.int64)


def _pool_into(out: np.ndarray, block: np.ndarray, rows: np.ndarray, cols: np.ndarray, ufunc
               ) -> None:
    """Reduce ``block`` with ``ufunc`` over the runs of equal picture rows and cols, into ``out``."""
    r_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    c_starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    red = ufunc.reduceat(ufunc.reduceat(block, r_starts, axis=0), c_starts, axis=1)
    sub = np.ix_(rows[r_starts], cols[c_starts])
    out[sub] = ufunc(out[sub], red)


@dataclass(frozen=True)
class SceneLayers:
    """BEFORE, AFTER, change score and mask of a part of the scene, at picture resolution.

    ``before``, ``after``: (M, N, 3) uint8; ``score``: (M, N) float32, noise sigma, the
    largest full-resolution score under each picture pixel; ``mask``: (M, N) uint8, 1 where any
    pixel below changed, 255 where all are nodata, else 0. ``window`` is the part of the BEFORE
    grid shown and ``scale`` picture pixels per BEFORE pixel.
    """

    before: np.ndarray
    after: np.ndarray
    score: np.ndarray
    mask: np.ndarray
    window: Window
    scale: float
    res_m: float


def scene_layers(outputs: Outputs, *, window: Window | None = None, max_px: int = 1000,
                 block_px: int = 1024) -> SceneLayers:
    """Rebuild BEFORE, AFTER, the change score and the change mask for a picture.

    Parameters
    ----------
    outputs : Outputs
    window : Window, optional
        Part of the BEFORE grid to show (pixels); the whole scene by default.
    max_px : int
        Longest side of the pictures, pixels.
    block_px : int
        The score is computed at full resolution block by block (memory stays bounded) and
        each picture pixel shows the largest score beneath it, so that no small object fades.

    Notes
    -----
    The score uses report.json's radiometry and score unit
    (:func:`pipeline.report.score.score_chip`); within a block border of a few pixels it matches
    the pipeline's.
    """
    recipe = ScoreRecipe.from_report(outputs.report)
    margin = int(math.ceil(3 * recipe.smoothing_px)) + recipe.tolerance_px + 2
    with open_pair(outputs) as pair:
        b_ds, grid, b_bands, a_bands, nodata = (pair.before, pair.grid, pair.before_bands,
                                                pair.after_bands, pair.nodata)
        full = Window(0, 0, grid.width, grid.height)
        win = full if window is None else Window(*[int(v) for v in window.flatten()]).intersection(full)
        small = picture_grid(rio.Grid(grid.crs, grid.transform, int(win.width), int(win.height),
                                      grid.res_m), max_px)
        shape = (small.height, small.width)
        scale = small.width / win.width
        b, vb = _read_picture(b_ds, b_bands, win, shape, nodata)
        a, va = _read_picture(pair.after_picture, a_bands, win, shape, nodata)
        score = np.zeros(shape, np.float32)
        changed = np.zeros(shape, np.uint8)
        all_nodata = np.ones(shape, np.uint8)
        mask_ds = rasterio.open(outputs.paths["change_mask"]) \
            if outputs.paths["change_mask"].exists() else None
        try:
            c_end, r_end = int(win.col_off + win.width), int(win.row_off + win.height)
            for row in range(int(win.row_off), r_end, block_px):
                for col in range(int(win.col_off), c_end, block_px):
                    core = Window(col, row, min(block_px, c_end - col), min(block_px, r_end - row))
                    padded = Window(col - margin, row - margin, core.width + 2 * margin,
                                    core.height + 2 * margin).intersection(full)
                    pb, pvb = rio.read_window(b_ds, padded, bands=b_bands, nodata=nodata)
                    pa, pva = rio.read_window(pair.after, padded, bands=a_bands, nodata=nodata)
                    s = score_chip(pb, pa, pvb & pva, recipe, padded)
                    r0, c0 = int(core.row_off - padded.row_off), int(core.col_off - padded.col_off)
                    s = s[r0:r0 + int(core.height), c0:c0 + int(core.width)]
                    rows = _pool_index(row, row + int(core.height), int(win.row_off), scale)
                    cols = _pool_index(col, col + int(core.width), int(win.col_off), scale)
                    rows, cols = np.minimum(rows, shape[0] - 1), np.minimum(cols, shape[1] - 1)
                    _pool_into(score, s, rows, cols, np.maximum)
                    if mask_ds is not None:
                        m = mask_ds.read(1, window=core)
                        _pool_into(changed, (m == 1).astype(np.uint8), rows, cols, np.maximum)
                        _pool_into(all_nodata, (m == 255).astype(np.uint8), rows, cols, np.minimum)
        finally:
            if mask_ds is not None:
                mask_ds.close()
        limits_b, limits_a = _scene_limits(pair)
    mask = np.where(changed == 1, 1, np.where(all_nodata == 1, 255, 0)).astype(np.uint8)
    if mask_ds is None:
        mask[:] = 255
    return SceneLayers(to_display(b, vb, limits_b), to_display(a, va, limits_a), score, mask,
                       win, scale, grid.mean_res_m)


def _scene_limits(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Display ranges of the whole scene, as report.html uses them (one stretch for all chips)."""
    small = picture_grid(pair.grid, 1000)
    b, vb = rio.read_display(pair.before, small, bands=pair.before_bands, nodata=pair.nodata)
    a, va = rio.read_display(pair.after_picture, small, bands=pair.after_bands, nodata=pair.nodata)
    return display_limits(b, vb), display_limits(a, va)


# --- detections ----------------------------------------------------------------------------

def outline_px(feature: dict, grid: rio.Grid) -> np.ndarray:
    """The corners of a detection's polygon as (K, 2) (col, row) pixel-centre coordinates."""
    ring = np.asarray(feature["geometry"]["coordinates"][0], float)[:-1]
    xs, ys = warp_transform("EPSG:4326", grid.crs, ring[:, 0].tolist(), ring[:, 1].tolist())
    inv = ~grid.transform
    xs, ys = np.asarray(xs), np.asarray(ys)
    cols = inv.a * xs + inv.b * ys + inv.c
    rows = inv.d * xs + inv.e * ys + inv.f
    return np.column_stack([cols, rows]) - 0.5


def output_grid(outputs: Outputs) -> rio.Grid:
    """The BEFORE grid of a run, from its change_mask.tif (or the BEFORE raster)."""
    path = outputs.paths["change_mask"]
    if not path.exists():
        path = outputs.paths.get("before")
        if path is None:
            raise InputError(f"{outputs.out_dir}: neither change_mask.tif nor BEFORE found")
    with rasterio.open(path) as ds:
        return rio.grid_of(ds)


@dataclass(frozen=True)
class Chip:
    """Full-resolution views around one detection.

    ``before``, ``after``: (m, n, 3) uint8 (stretched like the whole scene); ``score``: (m, n)
    float32, noise sigma; ``mask``: (m, n) uint8 as in change_mask.tif (0, 1, 255 nodata);
    ``outline``: (K, 2) the detection's polygon in chip pixels (col, row); ``offset``: where the
    chip's [0, 0] lies on the BEFORE grid.
    """

    id: str
    feature: dict
    before: np.ndarray
    after: np.ndarray
    score: np.ndarray
    mask: np.ndarray
    outline: np.ndarray
    offset: tuple[int, int]
    res_m: float


def chips(outputs: Outputs, features: Iterable[dict] | None = None, *,
          size_m: float | None = None) -> list[Chip]:
    """Cut a chip around each detection (all of them by default).

    Parameters
    ----------
    outputs : Outputs
    features : iterable of GeoJSON features, optional
        Which detections (e.g. from :func:`filter_detections`).
    size_m : float, optional
        Side of a chip, metres; by default the run's ``output.chip_m``.
    """
    feats = list(outputs.detections if features is None else features)
    if size_m is None:
        size_m = outputs.report.config.output.chip_m or 100.0
    recipe = ScoreRecipe.from_report(outputs.report)
    out = []
    with open_pair(outputs) as pair:
        grid, nodata = pair.grid, pair.nodata
        limits_b, limits_a = _scene_limits(pair)
        half = max(16, int(round(size_m / grid.mean_res_m / 2)))
        full = Window(0, 0, grid.width, grid.height)
        mask_path = outputs.paths["change_mask"]
        mask_ds = rasterio.open(mask_path) if mask_path.exists() else None
        try:
            for f in feats:
                poly = outline_px(f, grid)
                cx, cy = poly.mean(axis=0)
                w = Window(int(cx) - half, int(cy) - half, 2 * half, 2 * half).intersection(full)
                b, vb = rio.read_window(pair.before, w, bands=pair.before_bands, nodata=nodata)
                a, va = rio.read_window(pair.after, w, bands=pair.after_bands, nodata=nodata)
                s = score_chip(b, a, vb & va, recipe, w)
                m = mask_ds.read(1, window=w) if mask_ds is not None else \
                    np.full(vb.shape, 255, np.uint8)
                offset = (int(w.col_off), int(w.row_off))
                out.append(Chip(f["properties"]["id"], f, to_display(b, vb, limits_b),
                                to_display(a, va, limits_a), s, m, poly - np.asarray(offset, float),
                                offset, grid.mean_res_m))
        finally:
            if mask_ds is not None:
                mask_ds.close()
    return out


def filter_detections(features: Iterable[dict], *, classes: Iterable[str] | None = None,
                      categories: Iterable[str] | None = None, changes: Iterable[str] | None = None,
                      min_score: float | None = None, max_score: float | None = None,
                      verdicts: Mapping[str, str] | None = None, status: str | None = None
                      ) -> list[dict]:
    """The features that pass every given test, in their order.

    Parameters
    ----------
    classes, categories, changes : iterable of str, optional
        Keep features whose ``class`` / ``category`` / ``change`` is one of these.
    min_score, max_score : float, optional
        Bounds (inclusive) on the confidence ``score``, 0 to 1.
    verdicts : mapping id -> verdict, optional; status : str, optional
        With both, keep features whose verdict is ``status``: ``confirmed``, ``rejected`` or
        ``unreviewed`` (no verdict yet).
    """
    if status is not None and status not in (*VERDICTS, "unreviewed"):
        raise ValueError(f"status must be one of {VERDICTS + ('unreviewed',)}, got {status!r}")
    keep = []
    sets = {"class": classes, "category": categories, "change": changes}
    sets = {k: {v} if isinstance(v, str) else set(v) for k, v in sets.items() if v is not None}
    for f in features:
        p = f.get("properties", {})
        if any(p.get(k) not in allowed for k, allowed in sets.items()):
            continue
        score = float(p.get("score", 0.0))
        if (min_score is not None and score < min_score) or (max_score is not None and score > max_score):
            continue
        if status is not None:
            v = (verdicts or {}).get(p.get("id"), "unreviewed")
            if v != status:
                continue
        keep.append(f)
    return keep


# --- verdicts ------------------------------------------------------------------------------

def _csv_path(out_dir: str | Path) -> Path:
    p = Path(out_dir)
    return p if p.suffix.lower() == ".csv" else p / REVIEW_CSV


def load_verdicts(out_dir: str | Path) -> dict[str, str]:
    """Verdicts saved in ``review.csv`` of ``out_dir`` (or a given .csv file): ``{id: verdict}``.

    An absent file means nothing was reviewed yet: an empty dict.

    Raises
    ------
    InputError
        When the file lacks the ``id`` or ``verdict`` column or holds an unknown verdict.
    """
    path = _csv_path(out_dir)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"id", "verdict"} <= set(reader.fieldnames):
        raise InputError(f"{path}: needs a header with the columns id and verdict")
    out = {}
    for line, row in enumerate(reader, start=2):
        verdict = (row.get("verdict") or "").strip().lower()
        det_id = (row.get("id") or "").strip()
        if not det_id:
            continue
        if verdict not in VERDICTS:
            raise InputError(f"{path}: line {line}: verdict {verdict!r} of {det_id} is not one of "
                             f"{', '.join(VERDICTS)}")
        out[det_id] = verdict
    return out


def save_verdicts(out_dir: str | Path, verdicts: Mapping[str, str], *, merge: bool = True) -> Path:
    """Write verdicts to ``review.csv`` next to ``detections.geojson``; returns its path.

    Parameters
    ----------
    out_dir : path
        The output folder.
    verdicts : mapping id -> ``confirmed`` | ``rejected``
    merge : bool
        Keep the verdicts already in the file for detections not in ``verdicts`` (the default:
        a review goes on over several sessions); False replaces them all.

    The file lists one row per reviewed detection, in the order of detections.geojson, with its
    ``id``, ``verdict``, ``category``, ``class``, ``change`` and ``score``. It is written
    atomically.

    Raises
    ------
    ValueError
        For an unknown verdict or an id that detections.geojson does not hold.
    """
    outputs = load_outputs(out_dir)
    new = {str(k): str(v).strip().lower() for k, v in verdicts.items()}
    bad = {k: v for k, v in new.items() if v not in VERDICTS}
    if bad:
        raise ValueError(f"verdicts must be one of {', '.join(VERDICTS)}: {bad}")
    unknown = sorted(set(new) - set(outputs.ids))
    if unknown:
        raise ValueError(f"{outputs.paths['detections']} holds no detection {', '.join(unknown)}")
    merged = {**(load_verdicts(out_dir) if merge else {}), **new}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for f in outputs.detections:
        p = f["properties"]
        if p["id"] in merged:
            writer.writerow([p["id"], merged[p["id"]], p.get("category", ""), p.get("class", ""),
                             p.get("change", ""), p.get("score", "")])
    path = outputs.paths["review_csv"]
    rio.write_text_atomic(path, buf.getvalue())
    return path


def verdicts_as_truth(out_dir: str | Path) -> dict:
    """The confirmed detections of ``out_dir`` as a GeoJSON FeatureCollection of truth.

    Same schema as detections.geojson (so ``detect-changes-eval`` reads it as TRUTH), with
    ``verdict: confirmed`` added to each feature's properties.
    """
    outputs = load_outputs(out_dir)
    verdicts = load_verdicts(out_dir)
    feats = []
    for f in outputs.detections:
        if verdicts.get(f["properties"]["id"]) == "confirmed":
            feats.append({**f, "properties": {**f["properties"], "verdict": "confirmed"}})
    return {"type": "FeatureCollection", "features": feats}


def write_truth(out_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write :func:`verdicts_as_truth` to ``path`` (default ``review_truth.geojson`` in out_dir).

    Then ``detect-changes-eval OUT/review_truth.geojson OUT/detections.geojson`` scores the run
    against the analyst's verdicts: rejected detections count as false positives.
    """
    path = Path(path) if path is not None else Path(out_dir) / REVIEW_TRUTH
    rio.write_text_atomic(path, json.dumps(verdicts_as_truth(out_dir), indent=1))
    return path


# --- figures (matplotlib, imported when drawn) -----------------------------------------------

def _draw_outline(ax, pts: np.ndarray, change: str, label: str | None = None, *, lw: float = 1.5,
                  dashed: bool = False) -> None:
    from matplotlib.patches import Polygon

    colour = np.asarray(CHANGE_COLOURS.get(change, (255, 0, 255))) / 255.0
    ax.add_patch(Polygon(pts, closed=True, fill=False, edgecolor=colour, lw=lw,
                         ls="--" if dashed else "-"))
    if label:
        x, y = pts[:, 0].max() + 2, pts[:, 1].min()
        ax.text(x, y, label, color="black", fontsize=8, fontweight="bold", va="bottom",
                bbox=dict(boxstyle="square,pad=0.15", fc=colour, ec="black", lw=0.5))


def plot_scene(outputs: Outputs, layers: SceneLayers | None = None,
               features: Iterable[dict] | None = None, *,
               verdicts: Mapping[str, str] | None = None, width_in: float = 16.0):
    """BEFORE, AFTER, change score and mask side by side with the detections outlined.

    Rejected detections are drawn dashed. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    layers = layers or scene_layers(outputs)
    feats = list(outputs.detections if features is None else features)
    verdicts = verdicts or {}
    thr = outputs.report.config.difference.threshold_sigma
    h, w = layers.score.shape
    fig, axes = plt.subplots(1, 4, figsize=(width_in, width_in / 4 * h / w + 0.9),
                             constrained_layout=True)
    grid = output_grid(outputs)
    origin = np.array([layers.window.col_off, layers.window.row_off], float)
    mask_rgb = np.zeros((h, w, 3), np.uint8)
    mask_rgb[layers.mask == 1] = (255, 255, 255)
    mask_rgb[layers.mask == 255] = (90, 0, 0)
    shown = [(layers.before, "BEFORE", None), (layers.after, "AFTER (co-registered)", None),
             (layers.score, f"change score (noise \u03c3, seeds > {thr:g})", "inferno"),
             (mask_rgb, "change mask (dark red: nodata)", None)]
    for ax, (img, title, cmap) in zip(axes, shown):
        if cmap:
            im = ax.imshow(img, cmap=cmap, vmin=0, vmax=2 * thr, interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title)
        ax.set_axis_off()
        for f in feats:
            p = f["properties"]
            pts = (outline_px(f, grid) - origin + 0.5) * layers.scale - 0.5
            _draw_outline(ax, pts, p.get("change", ""), detection_label(p["id"]),
                          dashed=verdicts.get(p["id"]) == "rejected")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    return fig


def n_pages(features: Iterable[dict], per_page: int = 6) -> int:
    """How many pages of ``per_page`` chips the features fill."""
    return max(1, math.ceil(len(list(features)) / per_page))


def page_of(features: Iterable[dict], page: int = 0, per_page: int = 6) -> list[dict]:
    """The features on page ``page`` (0-based) of ``per_page``."""
    feats = list(features)
    if not 0 <= page < n_pages(feats, per_page):
        raise ValueError(f"page {page} out of range: {n_pages(feats, per_page)} pages")
    return feats[page * per_page:(page + 1) * per_page]


def plot_chips(outputs: Outputs, features: Iterable[dict] | None = None, *, page: int = 0,
               per_page: int = 6, verdicts: Mapping[str, str] | None = None,
               chip_in: float = 2.6):
    """One row per detection of a page: BEFORE, AFTER, change score and mask chips, with its
    id, class, change, size, heading, score and verdict. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    feats = page_of(outputs.detections if features is None else features, page, per_page)
    verdicts = verdicts or {}
    thr = outputs.report.config.difference.threshold_sigma
    cs = chips(outputs, feats)
    n = max(1, len(cs))
    fig, axes = plt.subplots(n, 4, figsize=(4 * chip_in + 0.5, n * (chip_in + 0.45)),
                             constrained_layout=True, squeeze=False)
    for row, chip in zip(axes, cs):
        p = chip.feature["properties"]
        mask_rgb = np.zeros(chip.mask.shape + (3,), np.uint8)
        mask_rgb[chip.mask == 1] = (255, 255, 255)
        mask_rgb[chip.mask == 255] = (90, 0, 0)
        for ax, img, kind in zip(row, (chip.before, chip.after, chip.score, mask_rgb),
                                 ("BEFORE", "AFTER", "score", "mask")):
            if kind == "score":
                ax.imshow(img, cmap="inferno", vmin=0, vmax=2 * thr, interpolation="nearest")
            else:
                ax.imshow(img, interpolation="nearest")
            _draw_outline(ax, chip.outline, p.get("change", ""), lw=1.0,
                          dashed=verdicts.get(chip.id) == "rejected")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(-0.5, img.shape[1] - 0.5)
            ax.set_ylim(img.shape[0] - 0.5, -0.5)
        verdict = verdicts.get(chip.id, "unreviewed")
        row[0].set_title(f"{chip.id}  {p.get('class')} ({p.get('category')})", loc="left",
                         fontsize=9, fontweight="bold")
        row[1].set_title(f"{p.get('change')}  {p.get('length_m', 0):.1f} x {p.get('width_m', 0):.1f} m",
                         loc="left", fontsize=9)
        row[2].set_title(f"heading {p.get('heading_deg', 0):.0f}\u00b0  score {p.get('score', 0):.2f}",
                         loc="left", fontsize=9)
        row[3].set_title(verdict, loc="left", fontsize=9,
                         color={"confirmed": "green", "rejected": "red"}.get(verdict, "gray"))
    for ax in axes.flat[len(cs) * 4:]:
        ax.set_axis_off()
    return fig


def detections_table(outputs: Outputs, features: Iterable[dict] | None = None,
                     verdicts: Mapping[str, str] | None = None) -> str:
    """A plain-text table of detections (id, class, category, change, size, heading, score,
    verdict), one line each, to print in a notebook or a terminal."""
    verdicts = verdicts or {}
    lines = [f"{'id':<6} {'class':<17} {'category':<9} {'change':<12} {'size (m)':>13} "
             f"{'heading':>7} {'score':>5}  verdict"]
    for f in (outputs.detections if features is None else features):
        p = f["properties"]
        size = f"{p.get('length_m', 0):.1f} x {p.get('width_m', 0):.1f}"
        lines.append(f"{p['id']:<6} {str(p.get('class')):<17} {str(p.get('category')):<9} "
                     f"{str(p.get('change')):<12} {size:>13} {p.get('heading_deg', 0):>6.0f}\u00b0 "
                     f"{p.get('score', 0):>5.2f}  {verdicts.get(p['id'], 'unreviewed')}")
    return "\n".join(lines)
