"""Classification: which footprint class a blob matches, and whether it appeared or disappeared.

Sizes come from the blob's minimum-area rectangle in metres; the direction of change from which
image holds an object at the blob's place (its contrast against the ring of ground around it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .blobs import Blob
from .config import FootprintClass


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

    def with_id(self, new_id: str) -> "Detection":
        return Detection(self.blob, self.klass, self.category, self.change, self.score,
                         self.class_fit, self.evidence_before, self.evidence_after, new_id)


def class_fit(length_m: float, width_m: float, cls: FootprintClass) -> float:
    """How well a footprint fits a class: 0 outside its ranges, 1 at the centre (log scale)."""
    fit = 1.0
    for value, (lo, hi) in ((length_m, cls.length_m), (width_m, cls.width_m)):
        if not lo <= value <= hi:
            return 0.0
        half = math.log(hi / lo) / 2
        centre = math.log(lo * hi) / 2
        fit *= 1.0 - 0.5 * abs(math.log(value) - centre) / half
    return fit


def footprint_class(length_m: float, width_m: float, classes: list[FootprintClass]
                    ) -> tuple[FootprintClass | None, float]:
    """The best-fitting class of a ``length_m`` x ``width_m`` footprint, or (None, 0)."""
    best, best_fit = None, 0.0
    for cls in classes:
        fit = class_fit(length_m, width_m, cls)
        if fit > best_fit:
            best, best_fit = cls, fit
    return best, best_fit


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
    conf = abs(ea - eb) / max(ea + eb, 1e-9)
    return change, conf, eb, ea


def classify(blobs: list[Blob], labels: np.ndarray, change_mask: np.ndarray,
             before: np.ndarray, after: np.ndarray, classes: list[FootprintClass], *,
             res_m: float, window_offset: tuple[int, int] = (0, 0), ring_m: float = 3.0
             ) -> list[Detection]:
    """Classify the blobs of one block; blobs that match no class are dropped.

    Parameters
    ----------
    blobs, labels : from :func:`pipeline.blobs.find_blobs` on this block
    change_mask : (M, N) bool
        The block's change mask (the ring around a blob excludes changed pixels).
    before, after : (B, M, N) float32
        The block's co-registered, normalised images.
    classes : list of FootprintClass
    res_m : float
        Pixel size, metres.
    window_offset : (col, row)
        The block's position on the BEFORE grid (blob coordinates are global).
    ring_m : float
        Width of the ground ring around a blob used as its background.
    """
    col_off, row_off = window_offset
    ring_px = max(2, int(round(ring_m / res_m)))
    detections = []
    for blob in blobs:
        cls, fit = footprint_class(blob.length_m, blob.width_m, classes)
        if cls is None:
            continue
        c0, r0, c1, r1 = blob.bbox_px
        c0, c1 = c0 - col_off, c1 - col_off
        r0, r1 = r0 - row_off, r1 - row_off
        pad = ring_px + 1
        y0, x0 = max(0, r0 - pad), max(0, c0 - pad)
        y1, x1 = min(labels.shape[0], r1 + pad), min(labels.shape[1], c1 + pad)
        inside = labels[y0:y1, x0:x1] == blob.label
        grown = cv2.dilate(inside.astype(np.uint8),
                           cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                     (2 * ring_px + 1, 2 * ring_px + 1)))
        ring = grown.astype(bool) & ~change_mask[y0:y1, x0:x1]
        change, conf, eb, ea = change_direction(before[:, y0:y1, x0:x1], after[:, y0:y1, x0:x1],
                                                inside, ring)
        strength = 1.0 - math.exp(-blob.mean_score / 6.0)
        score = strength * (0.5 + 0.5 * fit) * (0.5 + 0.5 * conf)
        detections.append(Detection(blob, cls.name, cls.category, change, round(score, 4),
                                    round(fit, 4), round(eb, 4), round(ea, 4)))
    return detections
