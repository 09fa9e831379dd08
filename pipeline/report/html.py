"""report.html: one self-contained page (pictures as data URIs) that an analyst reviews in a
browser, rendered from the Jinja2 template ``templates/report.html.j2`` (autoescaped).

The gallery's rows are made one at a time while the page is written (Jinja2's
``Template.generate``), their chips read, scored and encoded on the report's reader pool, so a
scene's chips need not all sit in memory.
"""
from __future__ import annotations

import base64
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import numpy as np

from .. import io as rio
from ..detect.classify import Detection
from .chips import Chip, chip_pool, read_chip
from .draw import (
    CHANGE_COLOURS,
    chip_picture,
    colour_hex,
    colour_score,
    detection_label,
    encode_jpeg,
    encode_png,
    score_colour_stops,
    shift_arrows_image,
)
from .model import CHANGES, ChangeCounts, ReportModel, as_report, zone_counts
from .score import ScoreRecipe, score_chip

if TYPE_CHECKING:
    from .pictures import ScenePictures

TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Picture:
    """An inline picture: its data URI and size, pixels."""

    src: str
    width: int
    height: int


def inline_picture(rgb: np.ndarray, *, photo: bool = False) -> Picture:
    """(M, N, 3) uint8 RGB as a data URI: JPEG when ``photo`` (a scene overview is a
    photograph, and as PNG it would make the page several times larger), else PNG (the exact
    pixels of chips)."""
    data, mime = (encode_jpeg(rgb), "image/jpeg") if photo else (encode_png(rgb), "image/png")
    return Picture(f"data:{mime};base64,{base64.b64encode(data).decode()}",
                   int(rgb.shape[1]), int(rgb.shape[0]))


@dataclass(frozen=True)
class GalleryRow:
    """One detection's row of the gallery: its chips (None: not available) and numbers."""

    id: str
    label: str
    colour: str
    before_chip: Picture | None
    after_chip: Picture | None
    score_chip: Picture | None
    klass: str
    category: str
    change: str
    length_m: float
    width_m: float
    area_m2: float
    heading_deg: float
    score: float
    mean_sigma: float
    seen: tuple[float, float] | None = None  # the aircraft detector's score, BEFORE and AFTER
    found_by: str = "difference"


def gallery_row(det: Detection, chip: Chip | None, recipe: ScoreRecipe | None) -> GalleryRow:
    """The row of ``det``: its BEFORE and AFTER chips and, when the report allows, the change
    score chip recomputed from ``recipe`` (``None`` where the chip's bands do not match)."""
    before = after = score = None
    if chip is not None:
        before, after = inline_picture(chip.before_rgb), inline_picture(chip.after_rgb)
        if recipe is not None:
            try:
                s = score_chip(chip.before, chip.after, chip.valid, recipe, chip.window)
            except ValueError:
                s = None
            if s is not None:
                top = 2.0 * recipe.threshold_sigma
                score = inline_picture(chip_picture(colour_score(s, top), det, chip.offset))
    b = det.blob
    return GalleryRow(det.id, detection_label(det.id), colour_hex(CHANGE_COLOURS[det.change]),
                      before, after, score, det.klass, det.category, det.change, b.length_m,
                      b.width_m, b.area_m2, b.heading_deg, det.score, b.mean_score,
                      None if det.seen_before is None else (det.seen_before, det.seen_after),
                      det.found_by)


def _chip_row(det: Detection, readers: tuple, *, pictures: ScenePictures,
              recipe: ScoreRecipe | None) -> GalleryRow:
    return gallery_row(det, read_chip(pictures.chips, det, readers), recipe)


def gallery_rows(detections: Sequence[Detection], pictures: ScenePictures,
                 recipe: ScoreRecipe | None, *, workers: int) -> Iterator[GalleryRow]:
    """The gallery's rows, in the order of ``detections``, made as they are consumed.

    Chips are read, scored and encoded on ``workers`` threads (GDAL, OpenCV and zlib release
    the GIL), a few rows ahead at most, each thread with its own handles of the files.
    """
    if pictures.chips is None:
        yield from (gallery_row(d, None, recipe) for d in detections)
        return
    workers = workers if len(detections) >= 4 else 1
    with chip_pool(pictures.chips, workers) as pool:
        yield from pool.map_ordered(partial(_chip_row, pictures=pictures, recipe=recipe),
                                    detections)


def _format(value, spec: str) -> str:
    return format(value, spec)


def _environment() -> jinja2.Environment:
    """The template's environment, made for each page (nothing is shared between threads)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("pipeline.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
                             finalize=lambda v: "" if v is None else v)
    env.filters["fmt"] = _format
    return env


def _score_recipe(report: ReportModel) -> ScoreRecipe | None:
    try:
        return ScoreRecipe.from_report(report)
    except ValueError:  # a report of an early version: no score chips
        return None


def page_context(report: ReportModel, detections: Sequence[Detection],
                 pictures: ScenePictures, recipe: ScoreRecipe | None) -> dict:
    """Everything the template shows but the gallery's rows."""
    co = report.coregistration
    total = ChangeCounts(appeared=sum(c.appeared for c in report.counts.values()),
                         disappeared=sum(c.disappeared for c in report.counts.values()))
    arrows = None
    # report.json's shifts and positions are in the input's own pixels
    k = pictures.factor
    scale = pictures.scale / k
    drawn = shift_arrows_image(pictures.before, scale, co,
                               pictures.res_m and pictures.res_m / k)
    if drawn is not None:
        arrows = {"picture": inline_picture(drawn[0], photo=True),
                  "exaggeration": drawn[1] / scale}
    chips = pictures.chips
    compared = None if chips is None else (
        len(chips.b_bands) if len(chips.b_bands) == len(chips.a_bands) else 1)
    return {
        "report": report, "co": co, "rad": report.radiometry,
        "input_names": [Path(str(v.path or role)).name for role, v in report.inputs.items()],
        "n_detections": len(detections),
        "by_change": {c: sum(d.change == c for d in detections) for c in CHANGES},
        "total": total, "zones": zone_counts(report, list(detections)),
        "overview": inline_picture(pictures.overlay(), photo=True), "arrows": arrows,
        "chip_m": report.config.output.chip_m,
        "threshold_sigma": report.config.difference.threshold_sigma,
        "score_stops": score_colour_stops(),
        # the legend stands above the rows: score chips are drawn when the report's radiometry
        # has the chips' band count
        "any_score": bool(detections) and recipe is not None and recipe.bands == compared,
    }


def render_html(report: ReportModel | Mapping, detections: Sequence[Detection],
                pictures: ScenePictures) -> Iterator[str]:
    """report.html, part by part (the gallery row by row); see :func:`write_html`."""
    report = as_report(report)
    recipe = _score_recipe(report)
    workers = report.config.processing.threads or os.cpu_count() or 1
    template = _environment().get_template(TEMPLATE)
    context = page_context(report, detections, pictures, recipe)
    # closed on leaving, also when rendering fails: its reader pool with it
    with closing(gallery_rows(detections, pictures, recipe, workers=workers)) as rows:
        yield from template.generate(context, rows=rows)


def write_html(path: str | Path, report: ReportModel | Mapping, detections: Sequence[Detection],
               pictures: ScenePictures) -> Path:
    """Write report.html atomically.

    Parameters
    ----------
    path : path
    report : ReportModel or mapping
        report.json's content; a mapping is validated into a :class:`ReportModel`.
    detections : sequence of Detection
        In the order of the gallery.
    pictures : ScenePictures
        The scene pictures and where the chips are read (:func:`pipeline.report.pictures.scene_pictures`).

    Notes
    -----
    Sections: a summary, the BEFORE/AFTER overview with detections outlined and numbered,
    counts by category and change (and by zone when the run has zones), the co-registration
    (numbers and the shift of each matching window drawn as arrows), the inputs, and a gallery
    with one row per detection: BEFORE, AFTER and change-score chips, class, change, size,
    heading and score.
    """
    report = as_report(report)  # a bad report fails here, before any file is made
    rio.write_parts_atomic(path, render_html(report, detections, pictures))
    return Path(path)
