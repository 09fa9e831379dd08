"""Accuracy cases from annotated imagery: truth changes derived from per-date aircraft boxes.

Turns two dates' box annotations (no change labels) into the truth the evaluation stage reads:
boxes matched across dates are unchanged, the rest appeared or disappeared, and what cannot be
judged (cut by a frame edge, outside the common overlap) becomes an ignore region.
"""
from __future__ import annotations

import ast
import csv
import functools
import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.warp import transform as warp_transform
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from .. import io as rio
from ..config import Config
from ..errors import InputError, RegistrationError, UnreadableInputError
from ..evaluate import Score, excused, is_ignore, match

#: Annotation label of a whole aircraft; every other label (``Truncated_airplane``) is unjudgeable.
AIRPLANE = "Airplane"


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in one image's pixels: x right, y down, (0, 0) the top-left corner."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = AIRPLANE

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    @property
    def long_px(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def short_px(self) -> float:
        return min(self.x1 - self.x0, self.y1 - self.y0)

    def moved(self, dx_px: float, dy_px: float) -> Box:
        return Box(self.x0 + dx_px, self.y0 + dy_px, self.x1 + dx_px, self.y1 + dy_px, self.label)

    def inside(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the box lies wholly in the rectangle (x0, y0)-(x1, y1)."""
        return self.x0 >= x0 and self.y0 >= y0 and self.x1 <= x1 and self.y1 <= y1

    def overlaps(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the box shares some area with the rectangle (x0, y0)-(x1, y1)."""
        return self.x0 < x1 and self.y0 < y1 and self.x1 > x0 and self.y1 > y0

    def union(self, other: Box) -> Box:
        return Box(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1),
                   max(self.y1, other.y1), self.label)


@dataclass(frozen=True)
class Truth:
    """Changes between two dates, every box in BEFORE pixels.

    ``unchanged`` holds the matched (BEFORE box, AFTER box moved onto BEFORE) pairs; ``ignore``
    the regions that cannot be judged, each with its reason.
    """

    appeared: list[Box]
    disappeared: list[Box]
    ignore: list[tuple[Box, str]]
    unchanged: list[tuple[Box, Box]]
    offset_px: tuple[float, float]

    @property
    def residual_px(self) -> tuple[float, float] | None:
        """Median (dx, dy) from unchanged BEFORE boxes to their AFTER boxes, pixels.

        Near zero when the offset agrees with the annotations (hand-drawn boxes scatter by a few
        pixels); None without unchanged boxes.
        """
        if not self.unchanged:
            return None
        d = np.array([np.subtract(a.centre, b.centre) for b, a in self.unchanged])
        return float(np.median(d[:, 0])), float(np.median(d[:, 1]))


@dataclass(frozen=True)
class OffsetFit:
    """A frame offset fitted to the aircraft annotated on both dates (:func:`refine_offset`).

    ``offset_px`` and ``prior_px`` are ``(dx, dy)`` as :func:`build_truth` reads them;
    ``n_pairs`` the matched aircraft behind the fit, 0 when too few matched and the prior is kept.
    """

    offset_px: tuple[float, float]
    prior_px: tuple[float, float]
    n_pairs: int

    @property
    def correction_px(self) -> tuple[float, float]:
        """How far the aircraft moved the prior, ``offset_px - prior_px``."""
        return (self.offset_px[0] - self.prior_px[0], self.offset_px[1] - self.prior_px[1])


@dataclass(frozen=True)
class Case:
    """One BEFORE/AFTER pair of plain (unreferenced) annotated images, and how to place them.

    ``after_offset_px`` (col, row) puts AFTER's top-left pixel that many BEFORE pixels right and
    down of BEFORE's when both are wrapped as GeoTIFFs (see :func:`wrap_case`); a control holds
    no real change.
    """

    group: str
    before: Path
    after: Path
    control: bool = False
    after_offset_px: tuple[float, float] = (0.0, 0.0)
    gsd_m: float = 0.5

    @property
    def before_id(self) -> str:
        return self.before.name

    @property
    def after_id(self) -> str:
        return self.after.name

    @property
    def name(self) -> str:
        return f"{self.group}_{self.before.stem[:8]}_{self.after.stem[:8]}"

    @property
    def nominal_offset_px(self) -> tuple[float, float]:
        """``(dx, dy)``: where the placement says AFTER's content lies, as :func:`build_truth`
        reads an offset (BEFORE's (x, y) at AFTER's (x + dx, y + dy)): ``-after_offset_px``."""
        return -self.after_offset_px[0], -self.after_offset_px[1]


@dataclass(frozen=True)
class CaseScore:
    """Aircraft scores of one case, and what the scores leave out.

    ``score`` counts aircraft only, change included. ``excused`` detections lay on or near an
    ignore region (not counted); ``launchers`` are launcher-sized detections (reported, not
    scored); ``wrong_change`` false positives would have matched a truth aircraft of the other
    change. ``false_positives`` and ``misses`` are the features behind ``fp`` and ``fn``.
    """

    score: Score
    excused: int
    launchers: int
    wrong_change: int
    false_positives: list[dict] = field(default_factory=list)
    misses: list[dict] = field(default_factory=list)


def parse_box(geometry: str, label: str) -> Box:
    """The bounding box of a Python-literal list of (x, y) vertices, e.g. ``"[(1, 2), ...]"``.

    Raises ValueError when the text is not such a list or encloses no area.
    """
    try:
        points = ast.literal_eval(geometry)  # a literal only: never evaluates code
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        raise ValueError(f"geometry is not a list of (x, y) points: {err}") from None
    if not isinstance(points, (list, tuple)) or len(points) < 2 or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in p) for p in points):
        raise ValueError("geometry is not a list of at least two (x, y) number pairs")
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    box = Box(min(xs), min(ys), max(xs), max(ys), label)
    if box.x1 <= box.x0 or box.y1 <= box.y0:
        raise ValueError("geometry encloses no area")
    return box


@contextmanager
def _csv_rows(path: Path, kind: str, contents: str) -> Iterator[csv.DictReader]:
    """The rows of a CSV file, its failures as one error naming it: ``{kind} file not found``
    or ``cannot read {contents} (...)``."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            yield csv.DictReader(fh)
    except FileNotFoundError:
        raise UnreadableInputError(f"{path}: {kind} file not found", path=path) from None
    except OSError as err:
        raise UnreadableInputError(f"{path}: cannot read {contents} ({err})", path=path) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read {contents} ({err})", path=path) from None


def load_annotations(csv_path: str | Path) -> dict[str, list[Box]]:
    """Boxes per image from a CSV with columns ``image_id``, ``geometry`` and ``class``.

    ``geometry`` is a Python-literal list of (x, y) pixel vertices (the Airbus aircraft sample's
    format); each box is their bounding box, labelled with ``class``. Images keep their file
    names as keys (``"<id>.jpg"``).

    Raises
    ------
    UnreadableInputError
        The file is missing or unreadable.
    InputError
        It lacks a column, or a row is malformed (the message names the file and the row's line
        number; the error's ``path`` the file).
    """
    path = Path(csv_path)
    with _csv_rows(path, "annotation", "annotations") as reader:
        missing = {"image_id", "geometry", "class"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}",
                             path=path)
        boxes: dict[str, list[Box]] = {}
        for row in reader:
            image, geometry, label = row.get("image_id"), row.get("geometry"), row.get("class")
            if not image or not geometry or not label:
                raise InputError(f"{path}: row at line {reader.line_num}: empty image_id, "
                                 "geometry or class", path=path)
            try:
                box = parse_box(geometry, label.strip())
            except ValueError as err:
                raise InputError(f"{path}: row at line {reader.line_num}: {err}",
                                 path=path) from None
            boxes.setdefault(image.strip(), []).append(box)
    return boxes


def placement_px(before_path: str | Path, after_path: str | Path) -> tuple[float, float]:
    """(col, row) of AFTER's top-left corner in BEFORE pixels, from the two transforms.

    Raises
    ------
    InputError
        The two files differ in CRS or pixel size, or are rotated: no offset relates them.
    """
    with rio.open_raster(before_path, "BEFORE") as b, rio.open_raster(after_path, "AFTER") as a:
        if b.crs != a.crs:
            raise InputError(f"{after_path}: CRS {a.crs} differs from BEFORE's {b.crs}",
                             path=after_path)
        tb, ta = b.transform, a.transform
        if tb.b or tb.d or ta.b or ta.d or not (math.isclose(tb.a, ta.a, rel_tol=1e-6)
                                                and math.isclose(tb.e, ta.e, rel_tol=1e-6)):
            raise InputError(f"{after_path}: pixel grid is rotated or its pixel size differs from "
                             f"BEFORE's ({before_path}); an offset alone cannot relate them",
                             path=after_path)
        col, row = ~tb @ (ta.c, ta.f)
    return float(col), float(row)


def frame_offset(before_path: str | Path, after_path: str | Path, config: Config | None = None
                 ) -> tuple[float, float]:
    """Where AFTER's content lies relative to BEFORE: ``(dx, dy)`` BEFORE pixels.

    What BEFORE shows at its pixel (x, y) lies at AFTER's own pixel (x + dx, y + dy): the
    residual shift that the pipeline's co-registration measures on the BEFORE grid
    (:func:`pipeline.run.coregister_pair`, same ``config``, same sign as its ``Shift``) less
    AFTER's placement (:func:`placement_px`).

    Examples
    --------
    The Airbus G8 crops, ``ef92f434[y + 768, x - 512] == e9021b38[y, x]``, wrapped with AFTER
    placed at ``offset_px=(512, -768)``, give about (-512, 768); G5's re-cut pair, both wrapped
    at one origin, about (-3.49, -12.33).

    Raises
    ------
    InputError
        See :func:`placement_px`.
    RegistrationError
        The co-registration measured no shift, or one below ``coregistration.min_quality``.
    """
    from ..run import (
        coregister_pair,  # the run module imports every stage; only needed here
    )

    config = config or Config()
    col0, row0 = placement_px(before_path, after_path)
    shift, _ = coregister_pair(before_path, after_path, config)
    if shift is None or shift.quality < config.coregistration.min_quality:
        why = "no window could be measured" if shift is None else f"quality {shift.quality:.2f}"
        raise RegistrationError(f"{after_path}: co-registration with {before_path} failed ({why})",
                                path=after_path)
    return shift.dx_px - col0, shift.dy_px - row0


def merge_duplicates(boxes: list[Box], *, max_centre_frac: float = 0.3) -> list[Box]:
    """One box per object: boxes of one image whose centres nearly coincide are merged.

    Two boxes whose centres lie within ``max_centre_frac`` of the longer side of the larger one
    are taken for one object annotated twice and replaced by their union (transitively: a chain of
    such boxes becomes one). The union is labelled :data:`AIRPLANE` only when every
    member is: an aircraft also boxed as truncated cannot be judged.

    Notes
    -----
    In the Airbus sample, image 1e7e0450 (group G7) has every one of its 26 aircraft boxed twice
    (52 rows), the two boxes' centres 1.5 to 19 px apart. Over all 3,425 annotations of the
    dataset, same-image pairs fall into two clean groups by centre distance over the longer side:
    184 pairs at 0.004 to 0.196 (duplicates, in 7 images), then none until 0.54 (distinct aircraft
    parked close). Unmerged, each duplicated aircraft that stays is matched once and its second
    box becomes a false ``disappeared`` or ``appeared`` change, and one that left counts twice.
    """
    if not boxes:
        return []
    centres = np.array([b.centre for b in boxes])
    longer = np.array([b.long_px for b in boxes])
    near = (np.linalg.norm(centres[:, None] - centres[None], axis=2)
            <= max_centre_frac * np.maximum(longer[:, None], longer[None]))
    groups: dict[int, list[Box]] = {}
    for b, g in zip(boxes, connected_components(near, directed=False)[1]):
        groups.setdefault(int(g), []).append(b)
    out = []
    for members in groups.values():
        box = functools.reduce(Box.union, members)
        labels = [m.label for m in members if m.label != AIRPLANE]
        out.append(Box(box.x0, box.y0, box.x1, box.y1, labels[0] if labels else AIRPLANE))
    return out


def match_boxes(before: list[Box], after: list[Box], *, max_distance_frac: float = 0.5
                ) -> list[tuple[int, int]]:
    """One-to-one matches (i, j) of boxes of two dates, both already in the same pixel frame.

    Optimal assignment (Hungarian method) on the distance between centres; a pair may match
    when its centres lie within ``max_distance_frac`` of the longer side of the larger box.

    Notes
    -----
    The annotations do not say which aircraft is which: a different aircraft parked on the same
    stand overlaps the old box and is taken for the same one (no change), although a detector
    may rightly see a change there.
    """
    if not before or not after:
        return []
    cb = np.array([b.centre for b in before])
    ca = np.array([a.centre for a in after])
    dist = np.linalg.norm(cb[:, None, :] - ca[None, :, :], axis=2)
    size = np.maximum(np.array([b.long_px for b in before])[:, None],
                      np.array([a.long_px for a in after])[None, :])
    allowed = dist <= max_distance_frac * size
    rows, cols = linear_sum_assignment(np.where(allowed, dist, 1e9))
    return [(int(i), int(j)) for i, j in zip(rows, cols) if allowed[i, j]]


def refine_offset(before_boxes: list[Box], after_boxes: list[Box], prior_px: tuple[float, float],
                  *, max_distance_frac: float = 0.5, duplicate_frac: float = 0.3,
                  min_pairs: int = 3, max_iterations: int = 10) -> OffsetFit:
    """The frame offset that the aircraft annotated on both dates agree on, from a prior.

    Parameters
    ----------
    before_boxes, after_boxes : list of Box
        Each date's boxes in its own image's pixels; only :data:`AIRPLANE` boxes count (a
        truncated box's centre is not the aircraft's), each date's duplicates merged first
        (:func:`merge_duplicates` with ``duplicate_frac``).
    prior_px : (float, float)
        ``(dx, dy)``, BEFORE's (x, y) at AFTER's (x + dx, y + dy): a georeference or a
        homography's translation, within about half an aircraft (30-90 px) of the truth.
    max_distance_frac : float
        Matching limit, see :func:`match_boxes`.
    min_pairs : int
        Fewer matched aircraft than this leave the prior as it is.
    max_iterations : int
        At most this many rounds of matching.

    Returns
    -------
    OffsetFit
        The offset (the prior when fewer than ``min_pairs`` aircraft match) and the number of
        matched aircraft behind it.

    Notes
    -----
    Each round matches the boxes (:func:`match_boxes`) with the offset so far and takes the
    median of the matched pairs' centre differences, until it stops moving: a prior that is
    tens of pixels off is pulled in by the aircraft it matches, and each round matches more.
    The median ignores the stand taken by another aircraft. Hand-drawn boxes scatter by a few
    pixels, so on a handful of aircraft the fit is good to a few pixels: enough for a truth
    of 60-190 px aircraft, not for judging a sub-pixel co-registration.
    """
    def whole_aircraft(boxes: list[Box]) -> list[Box]:
        if duplicate_frac > 0:
            boxes = merge_duplicates(boxes, max_centre_frac=duplicate_frac)
        return [b for b in boxes if b.label == AIRPLANE]

    before, after = whole_aircraft(before_boxes), whole_aircraft(after_boxes)
    prior = (float(prior_px[0]), float(prior_px[1]))
    fit = OffsetFit(prior, prior, 0)
    for _ in range(max_iterations):
        dx, dy = fit.offset_px
        pairs = match_boxes(before, [a.moved(-dx, -dy) for a in after],
                            max_distance_frac=max_distance_frac)
        if len(pairs) < min_pairs:
            break
        d = np.array([np.subtract(after[j].centre, before[i].centre) for i, j in pairs])
        offset = (float(np.median(d[:, 0])), float(np.median(d[:, 1])))
        settled = offset == fit.offset_px and len(pairs) == fit.n_pairs
        fit = OffsetFit(offset, prior, len(pairs))
        if settled:
            break
    return fit


def common_overlap_px(offset: tuple[float, float], before_shape: tuple[int, int],
                      after_shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the ground both frames show, BEFORE pixels (``offset`` as
    :func:`build_truth` reads it, shapes (rows, cols)); empty when x1 <= x0 or y1 <= y0."""
    dx, dy = offset
    return (max(0.0, -dx), max(0.0, -dy), min(float(before_shape[1]), after_shape[1] - dx),
            min(float(before_shape[0]), after_shape[0] - dy))


def build_truth(before_boxes: list[Box], after_boxes: list[Box], offset: tuple[float, float],
                before_shape: tuple[int, int], after_shape: tuple[int, int], *,
                edge_px: float = 16.0, max_distance_frac: float = 0.5,
                duplicate_frac: float = 0.3,
                fill: tuple[np.ndarray | None, np.ndarray | None] = (None, None)) -> Truth:
    """Appeared, disappeared and ignore regions from two dates' aircraft boxes.

    Parameters
    ----------
    before_boxes, after_boxes : list of Box
        Each date's boxes in its own image's pixels.
    offset : (float, float)
        ``(dx, dy)`` from :func:`frame_offset`: BEFORE's (x, y) lies at AFTER's (x + dx, y + dy).
        AFTER's boxes are moved by ``-offset`` into BEFORE pixels.
    before_shape, after_shape : (int, int)
        (rows, cols) of each image.
    edge_px : float
        A box closer than this to either frame's edge (or reaching outside the common overlap)
        cannot be judged.
    max_distance_frac : float
        Matching limit, see :func:`match_boxes`.
    duplicate_frac : float
        Each date's boxes are first merged by :func:`merge_duplicates` with this limit (0: not
        merged).
    fill : (array or None, array or None)
        Each image's fill (:func:`fill_mask`, (rows, cols) bool in its own pixels): the black
        that pads a scene's footprint out to its rectangle. A box within ``edge_px`` of either
        image's fill cannot be judged either ("nodata"): the other date did not see it.

    Returns
    -------
    Truth
        Unmatched judgeable ``Airplane`` boxes of BEFORE disappeared, of AFTER appeared.
        Unmatched unjudgeable boxes (another label such as ``Truncated_airplane``, at an edge,
        reaching outside the overlap) and matched pairs with an unjudgeable member are ignore
        regions: neither rewarded nor punished. Unmatched boxes wholly outside the common
        overlap (:func:`common_overlap_px`) are left out: the other date never saw them.
    """
    if duplicate_frac > 0:
        before_boxes = merge_duplicates(before_boxes, max_centre_frac=duplicate_frac)
        after_boxes = merge_duplicates(after_boxes, max_centre_frac=duplicate_frac)
    dx, dy = offset
    moved = [a.moved(-dx, -dy) for a in after_boxes]
    common = common_overlap_px(offset, before_shape, after_shape)
    # judged: wholly inside the common overlap less the edge margin
    x0, y0 = common[0] + edge_px, common[1] + edge_px
    x1, y1 = common[2] - edge_px, common[3] - edge_px

    def why_not(box: Box) -> str | None:
        if box.label != AIRPLANE:
            return box.label
        if not box.inside(x0, y0, x1, y1):
            return "edge"
        if any(mask is not None and _touches(mask, box.moved(sx, sy), edge_px)
               for mask, (sx, sy) in zip(fill, ((0.0, 0.0), (dx, dy)))):
            return "nodata"
        return None

    pairs = match_boxes(before_boxes, moved, max_distance_frac=max_distance_frac)
    ignore, unchanged = [], []
    for i, j in pairs:
        b, a = before_boxes[i], moved[j]
        reason = why_not(b) or why_not(a)
        if reason is not None:
            ignore.append((b.union(a), reason))
        else:
            unchanged.append((b, a))
    seen_b = {i for i, _ in pairs}
    seen_a = {j for _, j in pairs}
    disappeared, appeared = [], []
    for boxes, seen, out in ((before_boxes, seen_b, disappeared), (moved, seen_a, appeared)):
        for k, box in enumerate(boxes):
            if k in seen or not box.overlaps(*common):
                continue
            reason = why_not(box)
            if reason is None:
                out.append(box)
            else:
                ignore.append((box, reason))
    return Truth(appeared, disappeared, ignore, unchanged, (float(dx), float(dy)))


def control_truth(truth: Truth) -> Truth:
    """The truth of a no-change control (two crops of one acquisition): no change at all.

    Where the boxes imply a change, one crop's annotators missed an aircraft that the other's
    boxed (the pixels are identical): it is taken as unchanged, boxed by the one box there is.
    """
    missed = [(box, box) for box in truth.disappeared + truth.appeared]
    return replace(truth, appeared=[], disappeared=[], unchanged=truth.unchanged + missed)


def _touches(mask: np.ndarray, box: Box, margin_px: float) -> bool:
    """Whether ``mask`` is set anywhere within ``margin_px`` of ``box`` (pixels of ``mask``)."""
    rows, cols = mask.shape
    y0, x0 = max(0, math.floor(box.y0 - margin_px)), max(0, math.floor(box.x0 - margin_px))
    y1 = min(rows, math.ceil(box.y1 + margin_px))
    x1 = min(cols, math.ceil(box.x1 + margin_px))
    return y1 > y0 and x1 > x0 and bool(mask[y0:y1, x0:x1].any())


def fill_mask(path: str | Path, *, speck_px: int = 5) -> np.ndarray:
    """Where an image holds fill, not ground: pixels black in every band, (rows, cols) bool.

    Scenes cut to a rectangle pad their footprint with black (the Airbus sample's JPEGs declare
    no nodata). Black patches narrower than ``speck_px`` (a dark pixel in a shadow, JPEG
    ringing) are not fill.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            black = np.ones((ds.height, ds.width), np.uint8)
            for band in range(1, ds.count + 1):
                black &= ds.read(band) == 0
    return cv2.morphologyEx(black, cv2.MORPH_OPEN, np.ones((speck_px, speck_px), np.uint8)) > 0


def truth_collection(truth: Truth, transform: Affine, crs, res_m: tuple[float, float]) -> dict:
    """The truth as an RFC 7946 FeatureCollection (lon/lat), the schema of ``truth.geojson``.

    ``transform`` and ``crs`` are BEFORE's; ``res_m`` its pixel size (x, y) in metres. Each box
    becomes a Polygon with properties id, category ``"aircraft"``, change, length_m and width_m;
    ignore regions have change ``"unknown"``, ``"ignore": true`` and their ``reason``.
    """
    items = ([(b, "appeared", None) for b in truth.appeared]
             + [(b, "disappeared", None) for b in truth.disappeared]
             + [(b, "unknown", reason) for b, reason in truth.ignore])
    features = []
    for k, (box, change, reason) in enumerate(items, start=1):
        corners = [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
        xs, ys = zip(*(transform @ c for c in corners))
        lon, lat = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
        ring = orient(Polygon(zip(np.round(lon, 8), np.round(lat, 8))), sign=1.0)
        w_m, h_m = (box.x1 - box.x0) * res_m[0], (box.y1 - box.y0) * res_m[1]
        props = {"id": f"t{k:03d}", "category": "aircraft", "change": change,
                 "length_m": round(max(w_m, h_m), 2), "width_m": round(min(w_m, h_m), 2)}
        if reason is not None:
            props.update(ignore=True, reason=reason)
        features.append({"type": "Feature", "geometry": mapping(ring), "properties": props})
    return {"type": "FeatureCollection", "offset_px": [round(v, 3) for v in truth.offset_px],
            "features": features}


def write_truth(path: str | Path, truth: Truth, before_tif: str | Path) -> Path:
    """Write :func:`truth_collection` on BEFORE's grid (a georeferenced raster) to ``path``."""
    with rio.open_raster(before_tif, "BEFORE") as ds:
        grid = rio.grid_of(ds)
    rio.write_text_atomic(path, json.dumps(truth_collection(truth, grid.transform, grid.crs,
                                                            grid.res_m), indent=1))
    return Path(path)


def _aircraft_sides(truth_features: list[dict], detection_features: list[dict]):
    """The ignore regions, the aircraft truth and the aircraft detections of a case."""
    regions = [f for f in truth_features if is_ignore(f)]
    truth = [f for f in truth_features if not is_ignore(f)
             and (f.get("properties") or {}).get("category") == "aircraft"]
    found = [f for f in detection_features
             if (f.get("properties") or {}).get("category") == "aircraft"]
    return regions, truth, found


def _matched_by_change(truth: list[dict], found: list[dict], regions: list[dict],
                       max_distance_m: float, ignore_margin_m: float):
    """For each change: its truth and detections, the indexes into ``found`` of those
    detections, the matched (truth, detection) pairs and the unmatched detections excused by an
    ignore region (indexes into the change's lists)."""
    def of(features, change):
        return [i for i, f in enumerate(features)
                if (f.get("properties") or {}).get("change") == change]

    for change in sorted({(f.get("properties") or {}).get("change") for f in truth + found},
                         key=str):
        t = [truth[i] for i in of(truth, change)]
        at = of(found, change)
        d = [found[i] for i in at]
        _, pairs = match(t, d, max_distance_m)
        yield t, d, at, pairs, set(excused(d, pairs, regions, ignore_margin_m))


def detection_labels(truth_features: list[dict], detection_features: list[dict], *,
                     max_distance_m: float = 10.0, ignore_margin_m: float = 5.0) -> list[int]:
    """For each aircraft detection, in order, as :func:`score_case` counts it: 1 a true
    positive, 0 a false positive, -1 excused (on or near an ignore region)."""
    regions, truth, found = _aircraft_sides(truth_features, detection_features)
    labels = [0] * len(found)
    for _, _, at, pairs, gone in _matched_by_change(truth, found, regions, max_distance_m,
                                                     ignore_margin_m):
        for _, j in pairs:
            labels[at[j]] = 1
        for j in gone:
            labels[at[j]] = -1
    return labels


def score_case(truth_features: list[dict], detection_features: list[dict], *,
               max_distance_m: float = 10.0, ignore_margin_m: float = 5.0) -> CaseScore:
    """Aircraft precision and recall of one case, with :func:`pipeline.evaluate.match`.

    Only ``category == "aircraft"`` counts on both sides, and a match needs the same change.
    Truth features marked ``ignore`` are no truth, and a detection that matches none and lies
    within ``ignore_margin_m`` of one is left out (``excused``). Launcher-sized detections are
    counted apart, never as aircraft errors.
    """
    def of(features, change):
        return [f for f in features if (f.get("properties") or {}).get("change") == change]

    regions, truth, found = _aircraft_sides(truth_features, detection_features)
    launchers = sum((f.get("properties") or {}).get("category") in ("launcher", "vehicle")
                    for f in detection_features)
    tp = n_excused = 0
    fps, misses = [], []
    for t, d, _, pairs, gone in _matched_by_change(truth, found, regions, max_distance_m,
                                                   ignore_margin_m):
        tp += len(pairs)
        n_excused += len(gone)
        hit_d = {j for _, j in pairs}
        hit_t = {i for i, _ in pairs}
        fps += [f for j, f in enumerate(d) if j not in hit_d and j not in gone]
        misses += [f for i, f in enumerate(t) if i not in hit_t]
    # false positives that sit on a missed truth object of another change
    wrong = 0
    for change in {(f.get("properties") or {}).get("change") for f in misses}:
        others = [f for f in fps if (f.get("properties") or {}).get("change") != change]
        wrong += match(of(misses, change), others, max_distance_m)[0].tp
    return CaseScore(Score(tp, len(fps), len(misses)), n_excused, int(launchers), wrong,
                     fps, misses)


def wrap_case(case: Case, folder: str | Path) -> tuple[Path, Path]:
    """Write a case's images as ``before.tif`` and ``after.tif`` GeoTIFFs in ``folder``.

    Both lie on a nominal north-up grid (EPSG:32636, ``case.gsd_m``), AFTER placed by
    ``case.after_offset_px``; the pipeline measures any remaining shift.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    before = rio.wrap_plain_image(case.before, folder / "before.tif", gsd_m=case.gsd_m)
    after = rio.wrap_plain_image(case.after, folder / "after.tif", gsd_m=case.gsd_m,
                                 offset_px=case.after_offset_px)
    return before, after


def image_shape(path: str | Path) -> tuple[int, int]:
    """(rows, cols) of any raster GDAL reads (a plain JPEG too)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.height, ds.width


#: Airbus sample controls: (BEFORE, AFTER) id prefixes -> AFTER's placement in BEFORE pixels.
#: G5's pair is one acquisition re-cut (the pipeline finds its shift); G8's two crops of one
#: scene overlap with ``ef92f434[y + 768, x - 512] == e9021b38[y, x]`` (SOURCE.md).
AIRBUS_CONTROLS = {("b3c7c22d", "fc8f9dc5"): (0.0, 0.0), ("e9021b38", "ef92f434"): (512.0, -768.0)}


def airbus_cases(dataset_dir: str | Path) -> list[Case]:
    """Every same-airport pair of the Airbus aircraft sample, in ``derived_groups.csv`` order.

    BEFORE is the earlier row of a group, AFTER the later one; unannotated images (G4's extras)
    are left out. The two no-change controls are flagged (:data:`AIRBUS_CONTROLS`).

    Raises
    ------
    UnreadableInputError
        ``derived_groups.csv`` or ``annotations.csv`` is missing or unreadable.
    InputError
        One of them is malformed.
    """
    root = Path(dataset_dir)
    annotated = set(load_annotations(root / "annotations.csv"))
    groups: dict[str, list[Path]] = {}
    path = root / "derived_groups.csv"
    with _csv_rows(path, "group", "the groups") as reader:
        for row in reader:
            if not row.get("group") or not row.get("file"):
                raise InputError(f"{path}: a row lacks group or file", path=path)
            image = root / row["file"]
            if image.name in annotated:
                groups.setdefault(row["group"], []).append(image)
    cases = []
    for group, images in groups.items():
        for i, before in enumerate(images):
            for after in images[i + 1:]:
                key = (before.name[:8], after.name[:8])
                cases.append(Case(group, before, after, control=key in AIRBUS_CONTROLS,
                                  after_offset_px=AIRBUS_CONTROLS.get(key, (0.0, 0.0))))
    return cases


def homography_translation(text: str) -> tuple[float, float]:
    """Where a 3 x 3 homography (JSON rows, ``"[[a, b, c], [d, e, f], [g, h, i]]"``) maps the
    pixel (0, 0): ``(c / i, f / i)``, the translation of the pair taken as a shift.

    Raises ValueError when the text is not three rows of three finite numbers with ``i != 0``.
    """
    try:
        rows = json.loads(text)
    except ValueError as err:
        raise ValueError(f"homography is not JSON ({err})") from None
    if not (isinstance(rows, list) and len(rows) == 3 and all(
            isinstance(r, list) and len(r) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in r) for r in rows)):
        raise ValueError("homography is not three rows of three finite numbers")
    if rows[2][2] == 0:
        raise ValueError("homography maps (0, 0) to infinity (its last term is 0)")
    return float(rows[0][2]) / rows[2][2], float(rows[1][2]) / rows[2][2]


#: Columns :func:`airport_pair_cases` reads from ``airport_pairs.csv``.
PAIR_COLUMNS = ("group", "image_a", "image_b", "same_acquisition", "h_a_to_b")


def airport_pair_cases(dataset_dir: str | Path) -> list[Case]:
    """Every overlapping same-airport pair of the Airbus sample (``airport_pairs.csv``), in order.

    BEFORE is ``image_a``, AFTER ``image_b``; pairs with an unannotated image (G4's extras image)
    are left out. AFTER is placed where the pair's homography maps BEFORE's top-left pixel
    (:func:`homography_translation`: ``after_offset_px = (-tx, -ty)``), the georeference a
    provider would give: its scale and rotation terms are fitting noise (SOURCE.md), and the
    pipeline measures the remaining shift. ``same_acquisition`` pairs (two crops of one scene)
    are the no-change controls.

    Examples
    --------
    G8's crops ``ef92f434[y + 768, x - 512] == e9021b38[y, x]``: the homography's translation
    is (-512.01, 768.0), so AFTER (ef92f434) lies at ``after_offset_px`` (512.01, -768.0), and
    ``nominal_offset_px`` is (-512.01, 768.0).

    Raises
    ------
    UnreadableInputError
        ``airport_pairs.csv`` or ``annotations.csv`` is missing or unreadable, or an annotated
        image of a pair is not in ``images/``.
    InputError
        One of the CSV files lacks a column or holds a malformed row (the message names the file
        and the line).
    """
    root = Path(dataset_dir)
    annotated = set(load_annotations(root / "annotations.csv"))
    path = root / "airport_pairs.csv"
    cases = []
    with _csv_rows(path, "airport pair", "the airport pairs") as reader:
        missing = set(PAIR_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}",
                             path=path)
        for row in reader:
            case = _pair_case(root, row, f"{path}: row at line {reader.line_num}", path)
            if case.before.name in annotated and case.after.name in annotated:
                cases.append(case)
    for image in sorted({p for c in cases for p in (c.before, c.after)}):
        if not image.is_file():
            raise UnreadableInputError(f"{image}: image of {path.name} not found", path=image)
    return cases


def _pair_case(root: Path, row: dict, where: str, path: Path) -> Case:
    """The :class:`Case` of one row of ``airport_pairs.csv``; ``where`` starts its errors."""
    group, a, b = (row.get(k, "") or "" for k in ("group", "image_a", "image_b"))
    same = (row.get("same_acquisition") or "").strip()
    if not group.strip() or not a.strip() or not b.strip():
        raise InputError(f"{where}: empty group, image_a or image_b", path=path)
    if same not in ("0", "1"):
        raise InputError(f"{where}: same_acquisition is {same!r}, not 0 or 1", path=path)
    try:
        tx, ty = homography_translation(row.get("h_a_to_b") or "")
    except ValueError as err:
        raise InputError(f"{where}: {err}", path=path) from None
    # + 0.0: a zero translation places AFTER at 0.0, not -0.0
    return Case(group.strip(), root / "images" / a.strip(), root / "images" / b.strip(),
                control=same == "1", after_offset_px=(-tx + 0.0, -ty + 0.0))
