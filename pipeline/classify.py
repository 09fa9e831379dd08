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


def ring_around(inside: np.ndarray, changed: np.ndarray, ring_px: int) -> np.ndarray:
    """Unchanged pixels within ``ring_px`` of the blob: the ground it stands on."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1, 2 * ring_px + 1))
    grown = cv2.dilate(inside.astype(np.uint8), k).astype(bool)
    return grown & ~changed & ~inside


def classify_blob(blob: Blob, before: np.ndarray, after: np.ndarray, inside: np.ndarray,
                  ring: np.ndarray, classes: list[FootprintClass]) -> Detection | None:
    """Classify one blob from chips of both images around it; None when no class fits.

    Parameters
    ----------
    blob : Blob
        Measured blob (its ``mean_score`` filled in).
    before, after : (B, M, N) float32
        Chips of the co-registered, normalised images around the blob.
    inside, ring : (M, N) bool
        The blob's pixels on the chip; the unchanged ground around it (:func:`ring_around`).
    classes : list of FootprintClass
    """
    cls, fit = footprint_class(blob.length_m, blob.width_m, classes)
    if cls is None:
        return None
    change, conf, eb, ea = change_direction(before, after, inside, ring)
    strength = 1.0 - math.exp(-blob.mean_score / 6.0)
    score = strength * (0.5 + 0.5 * fit) * (0.5 + 0.5 * conf)
    return Detection(blob, cls.name, cls.category, change, round(score, 4), round(fit, 4),
                     round(eb, 4), round(ea, 4))
