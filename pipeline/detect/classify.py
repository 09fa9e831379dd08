"""Classification: which footprint class a blob matches, and whether it appeared or disappeared.

Sizes come from the blob's minimum-area rectangle in metres; the direction of change from which
image holds an object at the blob's place (its contrast against the ring of ground around it).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
import shapely
from rasterio.warp import transform as warp_transform

from ..change.difference import robust_sigma, shadow_like
from ..config import OUTSIDE_LAUNCHER_ZONES, FootprintClass, LauncherZonesConfig
from ..errors import PipelineWarning
from .blobs import Blob, measure

if TYPE_CHECKING:
    from ..io.raster import Grid


@dataclass(frozen=True)
class Detection:
    """A classified change: a :class:`Blob` plus class, category, change and score."""

    blob: Blob
    klass: str
    category: str
    change: str
    score: float
    class_fit: float
    evidence_before: float
    evidence_after: float
    id: str = ""
    moved_with: str = ""  # id of the other half of a move (see link_moves)
    #: the aircraft detector's score at the object in each image (None: not weighed by it)
    seen_before: float | None = None
    seen_after: float | None = None
    found_by: str = "difference"  # or "detector": an aircraft one image shows, the other not

    def with_id(self, new_id: str) -> "Detection":
        return replace(self, id=new_id)

    @property
    def direction_conf(self) -> float:
        """:func:`change_direction`'s confidence, from the two evidences."""
        return direction_conf(self.evidence_before, self.evidence_after)


def direction_conf(evidence_before: float, evidence_after: float) -> float:
    """How clearly one image holds the object: |ea - eb| / (ea + eb), in [0, 1]."""
    return abs(evidence_after - evidence_before) / max(evidence_after + evidence_before, 1e-9)


def link_moves(detections: list[Detection], res_m: tuple[float, float], *,
               max_distance_m: float, size_tolerance: float) -> list[Detection]:
    """Link each ``disappeared`` detection to the ``appeared`` one that is the same object moved.

    Two detections are candidates when they have the same class, their lengths and widths agree
    within ``size_tolerance`` and their centres lie within ``max_distance_m``. A pair is linked
    only when each is the other's single candidate: with two like aircraft leaving and one
    arriving nothing tells which one moved, so nothing is linked. Both get ``moved_with`` set to
    the other's id.
    """
    gone = [d for d in detections if d.change == "disappeared"]
    came = [d for d in detections if d.change == "appeared"]

    def alike(a: Detection, b: Detection) -> bool:
        if a.klass != b.klass:
            return False
        for x, y in ((a.blob.length_m, b.blob.length_m), (a.blob.width_m, b.blob.width_m)):
            if abs(x - y) > size_tolerance * max(x, y):
                return False
        (ca, ra), (cb, rb) = a.blob.centroid_px, b.blob.centroid_px
        return math.hypot((ca - cb) * res_m[0], (ra - rb) * res_m[1]) <= max_distance_m

    candidates = {g.id: [c for c in came if alike(g, c)] for g in gone}
    partner: dict[str, str] = {}
    for g in gone:
        if len(candidates[g.id]) != 1:
            continue
        c = candidates[g.id][0]
        if sum(c in cands for cands in candidates.values()) == 1:
            partner[g.id], partner[c.id] = c.id, g.id
    return [replace(d, moved_with=partner[d.id]) if d.id in partner else d for d in detections]


def one_per_object(detections: list[Detection], *, max_overlap: float) -> list[Detection]:
    """One detection per object: of two of one category and change whose rectangles overlap by
    more than ``max_overlap`` of the smaller one's area, one is kept (two pieces of one object:
    a split that cut a helicopter at its rotor, a nose measured apart from its aircraft, a
    piece of an aircraft and the aircraft its image shows). The one the detector found
    (``found_by`` detector) is kept over one the difference found: its box is the aircraft the
    image shows, where the difference's blob may hold its shadow or a neighbour too (on
    airports left out, F1 0.949 against 0.941 keeping the larger; README). Otherwise the larger
    is kept. Those are kept first, so a detection is dropped only for one that is kept; the
    order of those kept is unchanged. ``max_overlap`` 1 keeps them all but for exact copies
    (two pieces of one object that each grew into it, ``split.grow_m``), which are always
    one."""
    first = {(d.category, d.change, d.blob.corners_px): d for d in reversed(detections)}
    detections = [d for d in detections if first[(d.category, d.change, d.blob.corners_px)] is d]
    kept = larger_of_overlapping(shapely.polygons([d.blob.corners_px for d in detections])
                                 if detections else [],
                                 [(d.category, d.change) for d in detections],
                                 max_overlap=max_overlap,
                                 first=[d.found_by == "detector" for d in detections])
    return [d for d, k in zip(detections, kept) if k]


def larger_of_overlapping(rects, groups: list, *, max_overlap: float,
                          first: Sequence[bool] | None = None) -> np.ndarray:
    """Which of the polygons ``rects`` :func:`one_per_object` keeps (bool per polygon): of two
    of one group whose overlap exceeds ``max_overlap`` of the smaller's area, the one marked in
    ``first`` (the detector's), else the larger."""
    if max_overlap >= 1 or len(groups) < 2:
        return np.ones(len(groups), bool)
    areas = shapely.area(rects)
    tree = shapely.STRtree(rects)
    is_kept = np.zeros(len(groups), bool)
    marked = np.zeros(len(groups), bool) if first is None else np.asarray(first, bool)
    for i in np.lexsort((-areas, ~marked)):  # the marked first, each kind larger first
        near = [int(k) for k in tree.query(rects[i], predicate="intersects")
                if is_kept[k] and groups[k] == groups[i]]
        if any(overlap_share(rects[i], rects[k]) > max_overlap for k in near):
            continue
        is_kept[i] = True
    return is_kept


def overlap_share(a, b) -> float:
    """The area two polygons share, over the smaller one's area."""
    return float(shapely.area(shapely.intersection(a, b))
                 / max(min(shapely.area(a), shapely.area(b)), 1e-12))


def class_fit(length_m: float, width_m: float, cls: FootprintClass) -> float:
    """How well a footprint fits a class: 0 outside its ranges, 1 at the centre (log scale)."""
    fit = 1.0
    checks = [(length_m, cls.length_m), (width_m, cls.width_m)]
    if cls.aspect is not None:
        checks.append((length_m / max(width_m, 1e-9), cls.aspect))
    for value, (lo, hi) in checks:
        if not lo <= value <= hi:
            return 0.0
        half = math.log(hi / lo) / 2
        centre = math.log(lo * hi) / 2
        fit *= 1.0 - 0.5 * abs(math.log(value) - centre) / half
    return fit


def footprint_class(length_m: float, width_m: float, classes: list[FootprintClass]
                    ) -> tuple[FootprintClass | None, float]:
    """The class of a ``length_m`` x ``width_m`` footprint, and its fit; (None, 0) if none.

    Among the classes whose ranges contain the footprint, a class that refines another
    (:func:`refines`: most of its ranges lie within the other's) wins over it: a Su-35 fits
    ``helicopter``, ``combat-jet`` and the broad ``light-aircraft``; it is a combat jet. Of the
    classes left, which overlap without one refining the other (``medium-transport`` and
    ``large-transport``), the one whose centre the footprint lies nearest wins (the best
    :func:`class_fit`): an Il-76 (50.5 x 46.6 m) lies mid-way in medium-transport
    (30-58 x 25-58 m, fit 0.54) and at the smallest corner of large-transport (50-85 x 45-85 m,
    fit 0.29).
    """
    fitting = [(cls, class_fit(length_m, width_m, cls)) for cls in classes]
    return best_class([(cls, fit) for cls, fit in fitting if fit > 0])


def best_class(fitting: list[tuple[FootprintClass, float]]) -> tuple[FootprintClass | None, float]:
    """Of (class, fit) pairs, the class no other refines (:func:`refines`) that fits best; the
    first such on a tie. (None, 0) for an empty list."""
    if not fitting:
        return None, 0.0
    unrefined = [(cls, fit) for cls, fit in fitting
                 if not any(refines(other, cls) for other, _ in fitting)]
    return max(unrefined, key=lambda cf: cf[1])


def refines(narrow: FootprintClass, broad: FootprintClass, *, share: float = 0.5) -> bool:
    """Whether ``narrow`` is a special case of ``broad``: its ranges span a smaller box of
    (log length, log width) than ``broad``'s, and at least ``share`` of that box lies within
    ``broad``'s. ``combat-jet`` (13-25 x 8-19 m) refines ``light-aircraft`` (10-40 x 10-40 m;
    74 % of its box inside) and ``helicopter`` (all of it); ``large-transport`` does not refine
    ``medium-transport`` (11 %): the two are peers that overlap."""
    if narrow is broad or _extent(narrow) >= _extent(broad):
        return False
    inside = 1.0
    for (lo, hi), (blo, bhi) in ((narrow.length_m, broad.length_m),
                                 (narrow.width_m, broad.width_m)):
        inside *= max(0.0, math.log(min(hi, bhi) / max(lo, blo))) / math.log(hi / lo)
    return inside >= share


def _extent(cls: FootprintClass) -> float:
    """How broad a class is: the product of the log-widths of its length and width ranges."""
    return math.log(cls.length_m[1] / cls.length_m[0]) * math.log(cls.width_m[1] / cls.width_m[0])


def length_fit(length_m: float, cls: FootprintClass) -> float:
    """:func:`class_fit` of the length alone: 0 outside the class's lengths, 1 at their centre."""
    lo, hi = cls.length_m
    if not lo <= length_m <= hi:
        return 0.0
    return 1.0 - 0.5 * abs(math.log(length_m / math.sqrt(lo * hi))) / (math.log(hi / lo) / 2)


def launcher_zone_categories(detections: list[Detection], grid: Grid,
                             zones: LauncherZonesConfig) -> list[Detection]:
    """The detections, each ``launcher`` whose centre lies outside every launcher zone made a
    ``vehicle`` (:data:`~pipeline.config.OUTSIDE_LAUNCHER_ZONES`); the last step of
    classification, on the settled detections.

    Parameters
    ----------
    detections : list of Detection
        Settled detections (ids given, moves linked); their order, ids and classes are kept.
    grid : Grid
        The BEFORE grid their pixel coordinates are on (its CRS and geotransform).
    zones : LauncherZonesConfig
        ``config.launcher_zones``. Off: the detections as they are. On without a zone: every
        launcher is a vehicle.

    Returns
    -------
    list of Detection

    Notes
    -----
    A detection's centre is its blob's centroid, taken to lon/lat as ``detections.geojson``'s
    outlines are; the zones' edges are straight in lon/lat, as in GeoJSON (RFC 7946). A grid in
    pixel coordinates (``--gsd``) has no lon/lat: its launchers stay launchers, with a
    :class:`~pipeline.errors.PipelineWarning`.
    """
    launchers = [i for i, d in enumerate(detections) if d.category == "launcher"]
    if not zones.enabled or not launchers:
        return detections
    polygons = zones.polygons()
    if polygons and grid.pixel_frame:
        warnings.warn("launcher_zones are in lon/lat and this pair is in pixel coordinates: "
                      "launcher-sized detections stay launchers", PipelineWarning, stacklevel=2)
        return detections
    inside = np.zeros(len(launchers), bool)
    if polygons:
        cols, rows = np.array([detections[i].blob.centroid_px for i in launchers], float).T
        xs, ys = grid.transform @ (cols + 0.5, rows + 0.5)  # pixel indexes are pixel centres
        lon, lat = warp_transform(grid.crs, "EPSG:4326", list(xs), list(ys))
        centres = shapely.points(lon, lat)
        inside = np.any([shapely.covers(p, centres) for p in polygons], axis=0)
    out = list(detections)
    for i, kept in zip(launchers, inside):
        if not kept:
            out[i] = replace(detections[i], category=OUTSIDE_LAUNCHER_ZONES)
    return out


# Blobs this long are airliner-sized: the rules for small changes near static things (moved
# shadows, lean) do not apply to them when one image clearly holds the object, and thin parts
# (wings) lost when the fringe is cut are given back. Measured on the Airbus pairs
# (benchmarks/accuracy.py): recall 0.56 -> 0.69 on G1/G2/G3/G6 at the same precision.
LARGE_BLOB_M = 30.0


def may_hold_class(length_m: float, width_m: float, classes: list[FootprintClass], *,
                   slack: float = 1.6) -> bool:
    """Whether a blob could hold an object of some class once its shadow and blurred fringe are
    taken off: at least the class's smallest size, at most ``slack`` times its largest."""
    return any(cls.length_m[0] * 0.9 <= length_m <= cls.length_m[1] * slack
               and cls.width_m[0] * 0.9 <= width_m <= cls.width_m[1] * slack for cls in classes)


def object_evidence(image: np.ndarray, inside: np.ndarray, ring: np.ndarray) -> float:
    """Mean absolute deviation of the blob's pixels from the median of the ground around it.

    Parameters
    ----------
    image : (B, M, N) float32
        One image (normalised), a crop around the blob.
    inside, ring : (M, N) bool
        The blob's pixels; the ring of unchanged ground around it.
    """
    if not inside.any() or not ring.any():
        return 0.0
    dev = 0.0
    for band in image:
        ground = float(np.median(band[ring]))
        dev += float(np.mean(np.abs(band[inside] - ground)))
    return dev / image.shape[0]


def change_direction(before: np.ndarray, after: np.ndarray, inside: np.ndarray,
                     ring: np.ndarray) -> tuple[str, float, float, float]:
    """``appeared`` when AFTER holds the object (stronger evidence), else ``disappeared``.

    Returns the change, a confidence in [0, 1], and both evidences.
    """
    eb = object_evidence(before, inside, ring)
    ea = object_evidence(after, inside, ring)
    change = "appeared" if ea > eb else "disappeared"
    conf = direction_conf(eb, ea)
    return change, conf, eb, ea


def ring_around(inside: np.ndarray, changed: np.ndarray, ring_px: int) -> np.ndarray:
    """Unchanged pixels within ``ring_px`` of the blob: the ground it stands on."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
    grown = cv2.dilate(inside.astype(np.uint8), k).astype(bool)
    return grown & ~changed & ~inside


def object_pixels(inside: np.ndarray, holding: np.ndarray, other: np.ndarray,
                  score: np.ndarray | None = None, *, edge_fraction: float = 0.4) -> np.ndarray:
    """The blob's pixels without the object's own shadow and without its blurred fringe.

    In the image that holds the object, its shadow is the ground of the other image dimmed
    (:func:`pipeline.change.difference.shadow_like`); the object itself is not. The sensor's blur
    spreads an object's edge over a pixel or two, and the mask follows it down to the noise:
    the object's edge is where its change score falls below ``edge_fraction`` of its 90th
    percentile (near half maximum, the usual definition of an edge). Returns the largest
    remaining piece, or the whole blob when the shadow test would leave less than a quarter of it
    (a dark grey object on grey ground looks like a shadow).
    """
    obj = inside & ~shadow_like(holding, other)
    if score is not None and obj.any():
        # the object's own contrast: its shadow can change far more (a grey airliner on grey
        # concrete), and would put the edge inside the object
        obj &= score >= edge_fraction * float(np.percentile(score[obj], 90))
    obj = cv2.morphologyEx(obj.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(obj, connectivity=8)
    if n <= 1:
        return inside
    # the pieces of one object (an aircraft's wings part from its fuselage where the fringe is
    # cut): every piece of at least a fifth of the largest one
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= 0.2 * areas.max()) + 1
    obj = np.isin(labels, keep)
    return obj if obj.sum() >= 0.25 * inside.sum() else inside


def stands_out(lum: np.ndarray, ring: np.ndarray, *, relative: float) -> np.ndarray:
    """Where ``lum`` (one image's luminance chip) departs from the ground of the (non-empty)
    ``ring`` around a blob by more than 3 of its robust sigmas and ``relative`` of its median."""
    ground = lum[ring]
    centre = float(np.median(ground))
    return np.abs(lum - centre) > max(3.0 * robust_sigma(ground), relative * abs(centre), 1e-6)


def vehicle_group(inside: np.ndarray, holding: np.ndarray, ring: np.ndarray,
                  res_m: tuple[float, float], *, max_piece_m: float = 8.0,
                  min_pieces: int = 3) -> bool:
    """Whether a blob is a group of small vehicles (cars in a car park, a line of tugs) that the
    closing joined: in the image that holds it, what stands out from the ground inside it is
    ``min_pieces`` or more pieces, none longer than ``max_piece_m``. An aircraft or a launcher
    is one piece longer than that, whatever its wings and shadow do."""
    if not ring.any():
        return False
    out = inside & stands_out(holding.mean(axis=0), ring, relative=0.1)
    n, _, stats, _ = cv2.connectedComponentsWithStats(out.astype(np.uint8), connectivity=8)
    pieces = [s for s in stats[1:] if s[cv2.CC_STAT_AREA] >= 4]
    if len(pieces) < min_pieces:
        return False
    longest = max(math.hypot(s[cv2.CC_STAT_WIDTH] * res_m[0], s[cv2.CC_STAT_HEIGHT] * res_m[1])
                  for s in pieces)
    return longest <= max_piece_m


def attached_to_static_structure(before: np.ndarray, after: np.ndarray, ring: np.ndarray, *,
                                 min_fraction: float = 0.05, contrast: float = 0.2) -> bool:
    """Whether a blob touches an unchanged structure that stands out from the ground.

    The shadow of a static aircraft or building moves with the sun, its roof brightens with the
    view angle and a tall building leans differently: all of these changes hug the static
    object itself. An object that arrived or left stands on open ground. The blob's ring is
    tested: at least ``min_fraction`` of it differs from the ring's median by more than
    ``contrast`` (relative) in both images.
    """
    if not ring.any():
        return False
    return static_share(before, after, ring, contrast=contrast) >= min_fraction


def static_share(before: np.ndarray, after: np.ndarray, ring: np.ndarray, *,
                 contrast: float = 0.2) -> float:
    """Share of the (non-empty) ring that differs from the ring's median by more than
    ``contrast`` (relative) in both images: unchanged structure standing out from the ground."""
    stands_out = np.ones(ring.shape, bool)
    for img in (before, after):
        lum = img.mean(axis=0)
        ground = float(np.median(lum[ring]))
        stands_out &= np.abs(lum - ground) > contrast * max(abs(ground), 1e-3)
    return float(stands_out[ring].mean())


def shadow_share(before: np.ndarray, after: np.ndarray, inside: np.ndarray,
                 score: np.ndarray | None) -> float:
    """Share of the blob's core (its pixels scoring at least 0.4 of its 90th percentile, where
    the object is, not the blurred fringe; the whole blob without a score) that a shadow
    falling or lifting explains (:func:`pipeline.change.difference.shadow_like`); 0 without a core."""
    core = inside
    if score is not None:
        core = inside & (score >= 0.4 * float(np.percentile(score[inside], 90)))
    if not core.any():
        return 0.0
    return float((shadow_like(before, after) | shadow_like(after, before))[core].mean())


# An aircraft's footprint (fuselage, wings, tail; a rotor disc at most) fills at most what a
# disc fills of its square; vehicles, containers and patches of new asphalt fill their rectangle
COMPACT_FILL = math.pi / 4


def dropped_by_rule(blob: Blob, before: np.ndarray, after: np.ndarray, inside: np.ndarray,
                    ring: np.ndarray, *, score: np.ndarray | None, res_m: tuple[float, float],
                    change: str, conf: float) -> str | None:
    """The classical rule that finds a blob no object, or None: ``"static"`` (it hugs an
    unchanged structure), ``"shadow"`` (a shadow came, went or moved with the sun) or
    ``"vehicle-group"`` (cars that came and went in a car park). ``change`` and ``conf`` are
    :func:`change_direction`'s."""
    # a large blob that one image clearly holds is an object even beside markings or a jet
    # bridge; the rule is for the moved shadows and leaning roofs that hug static things
    clear_object = conf >= 0.4 and blob.length_m >= LARGE_BLOB_M
    if not clear_object and attached_to_static_structure(before, after, ring):
        return "static"
    # a shadow needs something to cast it: beside no static structure, a large shadow that one
    # image clearly holds is that of an object that came or went (an airliner as grey as the
    # apron shows mostly by its shadow)
    if shadow_share(before, after, inside, score) >= 0.75 and (
            not clear_object or attached_to_static_structure(before, after, ring)):
        return "shadow"
    if vehicle_group(inside, after if change == "appeared" else before, ring, res_m):
        return "vehicle-group"
    return None


def is_compact(blob: Blob) -> bool:
    """Whether a measured object fills its rectangle like a vehicle or a new patch of asphalt,
    more than an aircraft's outline can (:data:`COMPACT_FILL`)."""
    return blob.area_m2 > COMPACT_FILL * blob.length_m * blob.width_m


def classical_rule(raw: Blob, det: Detection, before: np.ndarray, after: np.ndarray,
                   inside: np.ndarray, ring: np.ndarray, *, score: np.ndarray | None,
                   res_m: tuple[float, float]) -> str | None:
    """The classical rule that would drop a detection of :func:`classify_blob` made with
    ``rules=False``, or None: those of :func:`dropped_by_rule` for the blob as found (``raw``),
    then ``"noclass"`` for an object whose measure fits no class (its class then only the one
    of its length) and ``"compact"`` for an aircraft that fills its rectangle
    (:func:`is_compact`)."""
    rule = dropped_by_rule(raw, before, after, inside, ring, score=score, res_m=res_m,
                           change=det.change, conf=det.direction_conf)
    if rule is None and det.class_fit == 0:
        rule = "noclass"
    if rule is None and det.category == "aircraft" and is_compact(det.blob):
        rule = "compact"
    return rule


def classify_blob(blob: Blob, before: np.ndarray, after: np.ndarray, inside: np.ndarray,
                  ring: np.ndarray, classes: list[FootprintClass], *, score: np.ndarray | None = None,
                  res_m: tuple[float, float], chip_offset_px: tuple[int, int] = (0, 0),
                  rules: bool = True) -> Detection | None:
    """Decide the change of one blob, measure the object without its shadow, and classify it.

    Parameters
    ----------
    blob : Blob
        Measured blob (its ``mean_score`` filled in).
    before, after : (B, M, N) float32
        Chips of the co-registered, normalised images around the blob.
    inside, ring : (M, N) bool
        The blob's pixels on the chip; the unchanged ground around it (:func:`ring_around`).
    classes : list of FootprintClass
    score : (M, N) float32, optional
        The change score on the chip (to find the object's edge).
    res_m : (float, float)
        Pixel size, metres.
    chip_offset_px : (col, row)
        Where the chip's [0, 0] lies on the BEFORE grid.
    rules : bool
        Apply the classical rules that find a blob no object (:func:`classical_rule`); off,
        the detection is made whatever they say, for the learned verifier to judge, and an
        object whose measure fits no class (a wing the mask lost, a jet bridge it kept) gets
        the aircraft class of its length (:func:`best_class` by :func:`length_fit`), with a
        fit of 0.

    Returns
    -------
    Detection or None
        None when the object fits no class (or a rule drops it).
    """
    change, conf, eb, ea = change_direction(before, after, inside, ring)
    if rules and dropped_by_rule(blob, before, after, inside, ring, score=score, res_m=res_m,
                                 change=change, conf=conf):
        return None
    holding, other = (after, before) if change == "appeared" else (before, after)
    # the object without its shadow and blurred fringe; when that cut took thin parts too (an
    # airliner's wings, a helicopter's rotor, a small dark airframe whose edge the blur eats)
    # and fits no class, the blob without its shadow, as an aircraft only: a launcher's
    # narrow width is measured without the fringe or not at all
    aircraft = [c for c in classes if c.category == "aircraft"]
    cls = None
    cuts = [(object_pixels(inside, holding, other, score), classes),
            (inside & ~shadow_like(holding, other), aircraft)]
    core = None  # the object's sharp core, measured
    for obj, allowed in cuts:
        if not obj.any():
            continue
        measured = blob if obj is inside else replace(
            measure(obj, chip_offset_px, res_m), mean_score=blob.mean_score,
            max_score=blob.max_score, label=blob.label)
        if core is None:
            core = measured
        cls, fit = footprint_class(measured.length_m, measured.width_m, allowed)
        if cls is not None:
            blob = measured
            break
    if cls is None and not rules and core is not None:
        by_length, _ = best_class([(c, length_fit(core.length_m, c)) for c in aircraft
                                   if length_fit(core.length_m, c) > 0])
        if by_length is not None:
            cls, fit, blob = by_length, 0.0, core
    if cls is None:
        return None
    if rules and cls.category == "aircraft" and is_compact(blob):
        return None  # fills its rectangle like a vehicle or a new patch of asphalt, not a plane
    strength = 1.0 - math.exp(-blob.mean_score / 6.0)
    score = strength * (0.5 + 0.5 * fit) * (0.5 + 0.5 * conf)
    return Detection(blob, cls.name, cls.category, change, round(score, 4), round(fit, 4),
                     round(eb, 4), round(ea, 4))
