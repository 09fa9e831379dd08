"""The per-image detector's evidence, fused with the difference.

Pass 1 reads each block of both images once; :class:`Sighter` runs the aircraft detector
(:mod:`pipeline.detect.aircraft`) on what it read, resampled to ``detector.resolution_m``, and
keeps the sightings whose centre lies in the block's core (the block's margin, the mask's
reach, holds the largest aircraft whole). :class:`Sightings` holds them for the scene, on the
BEFORE grid:

- an aircraft one image shows and the other does not, near enough (half its size: towed a few
  metres, leaning, misregistered) and of a like size, is a candidate of its own
  (:meth:`Sightings.unpartnered`, :func:`pipeline.detect.candidates.sighting_candidates`); an
  aircraft replaced by another of another size on the same stand is two, one disappeared and
  one appeared;
- every aircraft candidate, from the difference or the detector, gets the detector's score at
  its place in the image that holds it and in the other (:func:`with_sightings`): features of
  the verifier, which weighs both kinds of evidence.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from rasterio.windows import Window

from ..change.difference import windows_near
from .aircraft import AircraftDetector

#: least score a sighting is kept with: the evidence that the other image holds something there
EVIDENCE_SCORE = 0.05

#: the verifier's features from the detector (:func:`with_sightings`), before the blob context
DETECTOR_FEATURES = ("det_hold", "det_other", "det_margin", "log_det_size_ratio",
                     "from_detector")


def input_levels(ds, bands: list[int], nodata: float | None, *, side_px: int = 512
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """The values of ``ds``'s ``bands`` that map to 0 and 255 for the detector (trained on
    8-bit pictures): None for 8-bit data, else each band's 0.5th and 99.5th percentiles of a
    decimated read (nodata left out)."""
    if ds.dtypes[0] == "uint8":
        return None
    f = max(1, math.ceil(max(ds.width, ds.height) / side_px))
    arr = ds.read(bands, out_shape=(len(bands), max(1, ds.height // f), max(1, ds.width // f)))
    lo, hi = [], []
    for band in arr.astype(np.float64):
        v = band[np.isfinite(band)]
        if nodata is not None:
            v = v[v != nodata]
        if v.size == 0:
            v = np.array([0.0, 1.0])
        p0, p1 = np.percentile(v, [0.5, 99.5])
        lo.append(p0)
        hi.append(p1 if p1 > p0 else p0 + 1.0)
    return np.asarray(lo, np.float32), np.asarray(hi, np.float32)


def detector_picture(image: np.ndarray, valid: np.ndarray, levels, size: tuple[int, int]
                     ) -> np.ndarray:
    """(h, w, 3) float32 0-255 of a block (B, M, N) for the detector: the first three bands
    (red, green, blue; one band repeated), nodata 0, resampled to ``size`` (w, h) by pixel
    area, then scaled by ``levels`` (None: as is) and clipped to 0-255.

    The block is resampled in its own data type (OpenCV's: 8 and 16 bit integers, float32;
    other types as float32) before anything else is done to it: at the detector's 1 m, a block
    of 0.5 m pixels is a quarter of the pixels to scale.
    """
    bands = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    if bands.dtype not in (np.uint8, np.uint16, np.int16, np.float32):
        bands = bands.astype(np.float32)
    pixels = cv2.merge(list(bands))  # (M, N, 3), one copy in the block's type
    full = bool(valid.all())
    if not full:
        pixels *= valid[..., None].astype(pixels.dtype)
    interp = cv2.INTER_AREA if size[0] < pixels.shape[1] else cv2.INTER_LINEAR
    rgb = cv2.resize(pixels, size, interpolation=interp).astype(np.float32, copy=False)
    if levels is not None:
        lo, hi = levels
        n = min(3, len(lo))
        lo3, hi3 = np.resize(lo[:n], 3), np.resize(hi[:n], 3)
        rgb -= lo3
        rgb *= (255.0 / (hi3 - lo3)).astype(np.float32)
        np.clip(rgb, 0.0, 255.0, out=rgb)
        if not full:  # nodata stays 0, whatever the stretch made of it
            cover = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            rgb[cover == 0] = 0.0
    return rgb


#: side (grid pixels) of the cells in which :class:`Sighter` gathers where to look
LOOK_CELL_PX = 16
#: above this share of a block, the detector looks at the whole block (one call is cheaper)
LOOK_WHOLE_SHARE = 0.6


def look_windows(changed: np.ndarray, reach_px: int, *, cell_px: int = LOOK_CELL_PX,
                 whole_share: float = LOOK_WHOLE_SHARE) -> list[tuple[slice, slice]]:
    """Where in a block the detector looks: the boxes of the groups of ``cell_px`` cells within
    ``reach_px`` of a changed pixel, overlapping ones merged (an aircraft in two would be
    sighted twice), clipped to the block; the whole block when they cover more than
    ``whole_share`` of it; none when nothing changed."""
    return windows_near(changed, reach_px, cell_px=cell_px, whole_share=whole_share)


@dataclass(frozen=True)
class Sighter:
    """Runs the detector on each block pass 1 reads, and collects what it sees.

    Attributes
    ----------
    detector : AircraftDetector
    res_m : float
        Mean pixel size of the grid.
    resolution_m : float
        Pixel size the detector sees (``detector.resolution_m``).
    levels : (before, after)
        :func:`input_levels` of each image.
    reach_px : int or None
        None: the detector looks at every block whole (``detector.where: scene``). Else it
        looks only within this far of the block's change mask (``where: changes``):
        :func:`look_windows`.
    """

    detector: AircraftDetector
    res_m: float
    resolution_m: float
    levels: tuple
    reach_px: int | None = None
    found: list = field(default_factory=list, compare=False)
    looked: list = field(default_factory=list, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def sight(self, windows: tuple[Window, Window], b: np.ndarray, vb: np.ndarray,
              a: np.ndarray, va: np.ndarray, changed: np.ndarray | None = None) -> None:
        """The sightings of both images in one block (read in its padded window) whose centre
        lies in its core, kept in grid pixels; ``changed``: the block's change mask."""
        core, padded = windows
        h, w = vb.shape
        if self.reach_px is None or changed is None:
            looks = [(slice(0, h), slice(0, w))]
        else:
            looks = look_windows(changed, self.reach_px)
        out = [[], []]
        for rows, cols in looks:
            window = Window(padded.col_off + cols.start, padded.row_off + rows.start,
                            cols.stop - cols.start, rows.stop - rows.start)
            for k, (image, valid, levels) in enumerate(((b, vb, self.levels[0]),
                                                        (a, va, self.levels[1]))):
                boxes = self._boxes(image[:, rows, cols], valid[rows, cols], levels, window)
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                inside = ((cx >= core.col_off) & (cx < core.col_off + core.width)
                          & (cy >= core.row_off) & (cy < core.row_off + core.height))
                out[k].append(boxes[inside])
        empty = np.zeros((0, 5), np.float32)
        found = tuple(np.concatenate(o) if o else empty for o in out)
        looked = sum((r.stop - r.start) * (c.stop - c.start) for r, c in looks)
        with self._lock:
            self.found.append(found)
            self.looked.append((looked, h * w))

    def _boxes(self, image: np.ndarray, valid: np.ndarray, levels, window: Window
               ) -> np.ndarray:
        """The detector's boxes in one image's ``window`` (arrays of it), in grid pixels."""
        h, w = valid.shape
        scale = self.res_m / self.resolution_m
        size = (max(16, round(w * scale)), max(16, round(h * scale)))
        fx, fy = w / size[0], h / size[1]
        boxes = self.detector.detect(detector_picture(image, valid, levels, size),
                                     threshold=EVIDENCE_SCORE)
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * fx + window.col_off
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * fy + window.row_off
        return boxes

    @property
    def looked_share(self) -> float:
        """The share of the blocks' padded pixels the detector looked at."""
        seen = np.asarray(self.looked or [(0, 1)], np.float64)
        return float(seen[:, 0].sum() / max(seen[:, 1].sum(), 1.0))

    def sightings(self, *, threshold: float | None, partner_share: float,
                  size_tolerance: float) -> Sightings:
        """What every block saw, as one :class:`Sightings`."""
        empty = np.zeros((0, 5), np.float32)

        def in_order(boxes):  # by row, then column, whatever order the workers finished in
            return boxes[np.lexsort((boxes[:, 0], boxes[:, 1]))]
        b = in_order(np.concatenate([f[0] for f in self.found] or [empty]))
        a = in_order(np.concatenate([f[1] for f in self.found] or [empty]))
        t = self.detector.threshold if threshold is None else threshold
        return Sightings(b, a, t, partner_share * t, size_tolerance, self.res_m)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])


def _sides(boxes: np.ndarray) -> np.ndarray:
    return np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])


@dataclass(frozen=True)
class Sighting:
    """An aircraft one image shows with no partner in the other: its box (x0, y0, x1, y1, score;
    grid pixels) and the change it would be."""

    box: np.ndarray
    change: str

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class Sightings:
    """The detector's sightings of both images on the BEFORE grid, (N, 5) each: x0, y0, x1, y1
    (grid pixels) and score, every one from :data:`EVIDENCE_SCORE` up."""

    before: np.ndarray
    after: np.ndarray
    threshold: float
    partner_score: float
    size_tolerance: float
    res_m: float

    def _partnered(self, box: np.ndarray, other: np.ndarray) -> bool:
        """Whether ``other`` holds the same aircraft as ``box``: a sighting scoring at least
        :attr:`partner_score` whose centre lies within half the box's larger side and whose
        sides agree within :attr:`size_tolerance`."""
        if other.size == 0:
            return False
        strong = other[other[:, 4] >= self.partner_score]
        side = _sides(box[None])[0]
        near = np.hypot(*(_centres(strong) - _centres(box[None])).T) <= 0.5 * side.max()
        if not near.any():
            return False
        ratio = _sides(strong[near]) / np.maximum(side, 1e-6)
        alike = np.all(np.abs(np.log(np.maximum(ratio, 1e-6))) <= math.log1p(self.size_tolerance),
                       axis=1)
        return bool(alike.any())

    def unpartnered(self) -> list[Sighting]:
        """The sightings of at least :attr:`threshold` that the other image does not partner:
        BEFORE's as ``disappeared``, AFTER's as ``appeared``."""
        out = []
        for hold, other, change in ((self.before, self.after, "disappeared"),
                                    (self.after, self.before, "appeared")):
            for box in hold[hold[:, 4] >= self.threshold]:
                if not self._partnered(box, other):
                    out.append(Sighting(box, change))
        return out

    def evidence(self, centre: tuple[float, float], length_m: float, change: str
                 ) -> list[float]:
        """:data:`DETECTOR_FEATURES` (less ``from_detector``) at a candidate: the best score
        within half its length (at least 4 m) of its centre in the image that would hold it and
        in the other, their difference, and the log of the holding sighting's larger side over
        the candidate's length (0 when none)."""
        reach = max(0.5 * length_m, 4.0) / self.res_m
        hold, other = (self.after, self.before) if change == "appeared" else (self.before, self.after)
        scores = []
        best = None
        for boxes in (hold, other):
            if boxes.size == 0:
                scores.append(0.0)
                continue
            d = np.hypot(*(_centres(boxes) - np.asarray(centre)).T)
            near = d <= reach
            scores.append(float(boxes[near, 4].max()) if near.any() else 0.0)
            if best is None and near.any():
                best = boxes[near][int(np.argmax(boxes[near, 4]))]
        size = 0.0
        if best is not None:
            size = math.log(max(float(_sides(best[None]).max()) * self.res_m, 1e-3)
                            / max(length_m, 1e-3))
        return [scores[0], scores[1], scores[0] - scores[1], size]


def with_sightings(found: list, sightings: Sightings | None) -> list:
    """Each judged candidate's features with the detector's (:data:`DETECTOR_FEATURES`)
    appended, and its detection with the detector's score at it in each image
    (``seen_before``, ``seen_after``; its ``found_by`` says where it was found); NaN features
    without sightings (the detector off: a verifier trained without them reads none of them)."""
    out = []
    for c in found:
        if c.features is not None:
            if sightings is None:
                more = [math.nan] * len(DETECTOR_FEATURES)
            else:
                b = c.det.blob
                more = [*sightings.evidence(b.centroid_px, b.length_m, c.det.change),
                        float(c.det.found_by == "detector")]
                hold, other = more[:2]
                seen = (other, hold) if c.det.change == "appeared" else (hold, other)
                c = replace(c, det=replace(c.det, seen_before=round(seen[0], 3),
                                           seen_after=round(seen[1], 3)))
            c = replace(c, features=np.append(c.features, more))
        out.append(c)
    return out
