"""Candidates of pass 2: the blobs of the change mask, measured and classified, and what else
each blob may be (:func:`block_candidates`).

One generator per source of evidence, each yielding :class:`Candidate` values that
:func:`pipeline.detect.judge.judge` weighs: the blob as found (:func:`_whole`), its parts where
it joins several objects at narrow necks (:func:`_parts`), and, with the verifier on, the
object as each image shows it around the blob (:func:`_grown`).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Iterator

import cv2
import numpy as np
from rasterio.windows import Window

from ..change.difference import LOCAL_NOISE_M, change_score, local_noise_gain
from ..change.noise import NoiseModel
from ..change.radiometry import comparable, normalise
from ..config import Config, DifferenceConfig, FootprintClass, SplitConfig
from ..io.scene import Scene
from . import verifier
from .blobs import Blob, find_blobs, measure, split_at_necks
from .classify import (
    Detection,
    classical_rule,
    classify_blob,
    may_hold_class,
    ring_around,
    stands_out,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One region's detection: whether the classical path keeps it, its verifier features
    (None when not judged) and the classical rule that would drop it (None when none)."""

    det: Detection
    classical: bool
    features: np.ndarray | None
    rule: str | None


def blob_margin_px(config: Config, res_m: float) -> int:
    """Block overlap wide enough that any blob of class size lies whole in one padded block."""
    return int(math.ceil(math.sqrt(2) * config.max_footprint_m / res_m)) + 4


@dataclass(frozen=True)
class Rules:
    """What candidates are made under: the config's classes and thresholds, in pixels of the
    grid, and whether the verifier judges them (``judging``: aircraft are then measured even
    where a classical rule would drop them, the rule one of their features)."""

    classes: list[FootprintClass]
    difference: DifferenceConfig
    split: SplitConfig
    min_sigma: float
    res_m: tuple[float, float]
    mean_res_m: float
    ring_px: int
    pad_px: int
    whole_px: int
    largest_m: tuple[float, float]
    core_width_m: float
    separation_m: float
    judging: bool

    @classmethod
    def from_config(cls, config: Config, grid, *, judging: bool) -> Rules:
        """The rules of ``config`` on ``grid`` (a :class:`~pipeline.io.raster.Grid`)."""
        d = config.difference
        res = grid.mean_res_m
        ring_px = max(2, int(round(3.0 / res)))
        pad = max(ring_px + int(math.ceil(3 * d.smoothing_px)) + d.tolerance_px + 2,
                  int(math.ceil(LOCAL_NOISE_M / res)))
        narrowest = config.narrowest_aircraft_m
        sp = config.split
        return cls(config.classes, d, sp, config.verifier.min_sigma, grid.res_m, res, ring_px, pad,
                   # a blob this much smaller than the block margin lies whole in every padded
                   # block that keeps it, so a split sees the same pixels windowed and whole-array
                   blob_margin_px(config, res),
                   (config.max_footprint_m, max(c.width_m[1] for c in config.classes)),
                   sp.core_width_m or narrowest, sp.min_separation_m or narrowest, judging)

    def too_small(self, region: Blob) -> bool:
        """Never measured as an object, a blob or a part."""
        return region.area_px < self.difference.min_pixels or region.area_m2 < self.difference.min_area_m2

    def may_hold_class(self, region: Blob) -> bool:
        return may_hold_class(region.length_m, region.width_m, self.classes)


@dataclass(frozen=True)
class Chip:
    """Both images around one blob, with what the candidates made from it are measured on.

    ``before``/``after`` (B, m, n) comparable, AFTER normalised; ``valid`` in both; ``mask``
    the pass-1 mask (0/1, 255 nodata); ``inside`` the blob's connected component; ``score``
    the change score; ``gain`` the local noise gain of the ground around it.
    """

    window: Window
    mask: np.ndarray
    inside: np.ndarray
    before: np.ndarray
    after: np.ndarray
    valid: np.ndarray
    score: np.ndarray
    gain: float

    @property
    def offset(self) -> tuple[int, int]:
        return int(self.window.col_off), int(self.window.row_off)

    def ring(self, region: np.ndarray, ring_px: int) -> np.ndarray:
        """Valid ground around ``region`` that the mask does not hold."""
        return ring_around(region, self.mask != 0, ring_px) & self.valid


def read_chip(blob: Blob, labels: np.ndarray, padded: Window, sources: tuple, *, scene: Scene,
              noise: NoiseModel, rules: Rules) -> Chip:
    """The :class:`Chip` around ``blob`` (found in ``labels`` of the block read in ``padded``);
    ``sources``: (BEFORE, AFTER on the grid, mask reader)."""
    c0, r0, c1, r1 = blob.bbox_px
    chip = chip_window(blob.bbox_px, scene, rules)
    # one pixel of the blob, to find it again among the chip's components
    ys, xs = np.nonzero(labels[r0 - int(padded.row_off):r1 - int(padded.row_off),
                               c0 - int(padded.col_off):c1 - int(padded.col_off)] == blob.label)
    seed = (int(ys[0] + r0 - chip.row_off), int(xs[0] + c0 - chip.col_off))
    return read_chip_at(chip, sources, lambda mask: _component(mask == 1, seed), scene=scene,
                        noise=noise, rules=rules)


def _component(pixels: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    _, labels = cv2.connectedComponents(pixels.astype(np.uint8), connectivity=8)
    return labels == labels[seed]


def chip_window(bbox_px: tuple[int, int, int, int], scene: Scene, rules: Rules) -> Window:
    """The chip read around a region's bounding box (col0, row0, col1, row1), on the grid."""
    c0, r0, c1, r1 = bbox_px
    pad = rules.pad_px
    full = Window(0, 0, scene.grid.width, scene.grid.height)
    return Window(c0 - pad, r0 - pad, c1 - c0 + 2 * pad, r1 - r0 + 2 * pad).intersection(full)


def read_chip_at(chip: Window, sources: tuple, inside_of, *, scene: Scene, noise: NoiseModel,
                 rules: Rules) -> Chip:
    """The :class:`Chip` read in the window ``chip``, its ``inside`` given by
    ``inside_of(chip mask)``; ``sources``: (BEFORE, AFTER on the grid, mask reader)."""
    *readers, mask_reader = sources
    d = rules.difference
    chip_mask = mask_reader.read(chip)
    b, vb, a, va = scene.read(readers, chip)
    b, a = comparable(b, a)
    a = normalise(a, noise.radiometry, chip)
    score = change_score(b, a, vb & va, noise.unit, smoothing_px=d.smoothing_px,
                         tolerance_px=d.tolerance_px)
    gain = local_noise_gain(b, a, vb & va & (chip_mask == 0), noise.unit, d.smoothing_px)
    return Chip(chip, chip_mask, inside_of(chip_mask), b, a, vb & va, score, gain)


def _candidate(chip: Chip, region_blob: Blob, region: np.ndarray, rules: Rules, *,
               shown_from: np.ndarray | None = None) -> Candidate | None:
    """The region's :class:`Candidate`, None when it is no candidate. ``shown_from``: the region
    is the object as an image shows it around that blob's pixels, whose change score is its
    evidence and which measures it whole (parts of it may not have changed: no edge of the
    score cuts it)."""
    d, judging = rules.difference, rules.judging
    s = chip.score[region if shown_from is None else shown_from]
    region_blob = replace(region_blob, mean_score=float(s.mean()), max_score=float(s.max()))
    strong = region_blob.mean_score * chip.gain >= d.blob_sigma
    if not strong and not (judging and region_blob.mean_score * chip.gain >= rules.min_sigma):
        return None  # weak over its body (speckle the closing joined, soil, haze)
    b, a = chip.before, chip.after
    ring = chip.ring(region, rules.ring_px)
    score = chip.score if shown_from is None else None
    # judged by the verifier, an aircraft the classical rules would drop is measured all the
    # same, the rule it breaks one of its features
    det = classify_blob(region_blob, b, a, region, ring, rules.classes, score=score,
                        res_m=rules.res_m, chip_offset_px=chip.offset, rules=not judging)
    if det is None:
        return None
    rule = (classical_rule(region_blob, det, b, a, region, ring, score=chip.score,
                           res_m=rules.res_m) if judging else None)
    if det.category != "aircraft" and (not strong or rule is not None):
        return None  # launchers: the classical path alone
    x = None
    if judging and det.category == "aircraft":
        x = verifier.candidate_features(region_blob, det, b, a, region, ring, score=chip.score,
                                        gain=chip.gain, res_m=rules.res_m,
                                        blob_sigma=d.blob_sigma, rule=rule, shown_from=shown_from)
    return Candidate(det, strong and rule is None, x, rule)


def _whole(chip: Chip, blob: Blob, rules: Rules) -> list[Candidate]:
    """The blob as found, when its measure may hold a class."""
    if not rules.may_hold_class(blob):
        return []
    return [c for c in [_candidate(chip, blob, chip.inside, rules)] if c is not None]


def _parts(chip: Chip, blob: Blob, found: list[Candidate], rules: Rules) -> list[Candidate]:
    """``found``, or the blob cut at narrow necks into several objects: its parts replace it
    when two or more of them are aircraft candidates, or when it is none and a part is."""
    parts = split_at_necks(chip.inside, rules.mean_res_m, core_width_m=rules.core_width_m,
                           min_separation_m=rules.separation_m)
    if parts.max() <= 1:
        return found
    pieces = []
    for k in range(1, int(parts.max()) + 1):
        part = parts == k
        if part.sum() < rules.difference.min_pixels:
            continue
        part_blob = replace(measure(part, chip.offset, rules.res_m), label=blob.label)
        if rules.too_small(part_blob) or not rules.may_hold_class(part_blob):
            continue
        pieces += [c for c in [_candidate(chip, part_blob, part, rules)] if c is not None]
    # decided on the candidates no classical rule drops (the classical path's); the others only
    # fill a gap, for the verifier to judge
    ok_found = [c for c in found if c.rule is None]
    ok_pieces = [c for c in pieces if c.rule is None]
    aircraft = sum(c.det.category == "aircraft" for c in ok_pieces)
    log.debug("blob at %s: %d parts, %d aircraft candidates among them",
              blob.centroid_px, int(parts.max()), aircraft)
    if aircraft >= 2 or (not ok_found and (ok_pieces or not found)):
        return pieces
    return found


def _grown(chip: Chip, blob: Blob, rules: Rules) -> list[Candidate]:
    """The object as each image shows it around the blob: a mask cut into pieces where the
    other image holds something as bright (a white aircraft over white runway numbers) is one
    candidate again, centred on the object, for the verifier alone to judge."""
    inside = chip.inside
    ring0 = chip.ring(inside, rules.ring_px)
    grown, out = [], []
    lums = (chip.before.mean(axis=0), chip.after.mean(axis=0))
    for lum, other in zip(lums, lums[::-1]) if ring0.sum() >= 8 else ():
        region = inside | verifier.silhouette(inside, inside, lum, ring0, rules.res_m,
                                              reach_m=rules.split.grow_m)
        if region.sum() < 1.25 * inside.sum() or any((region == r).all() for r in grown):
            continue
        # mostly there in the other image too: an object that stayed, beside a change
        if stands_out(other, ring0, relative=0.05)[region].mean() >= 0.5:
            continue
        grown.append(region)
        g_blob = replace(measure(region, chip.offset, rules.res_m), label=blob.label)
        if rules.may_hold_class(g_blob):
            out += [replace(c, classical=False)
                    for c in [_candidate(chip, g_blob, region, rules, shown_from=inside)]
                    if c is not None and c.det.category == "aircraft"]
    return out


def may_hold_blobs(windows: tuple[Window, Window], changed: set[tuple[int, int]],
                   block_px: int) -> bool:
    """Whether a pass-2 block can hold a blob: the blobs it keeps start in its core, so their
    pixels lie in that core or in the cores below and to the right that its padded window
    reaches; ``changed`` holds the (row, col) offsets of the cores with a pixel of change."""
    core, padded = windows
    r, c = int(core.row_off), int(core.col_off)
    below = int(padded.row_off + padded.height) - r
    right = int(padded.col_off + padded.width) - c
    return any((r + dr, c + dc) in changed
               for dr in range(0, below, block_px) for dc in range(0, right, block_px))


def _considered(blob: Blob, rules: Rules) -> bool:
    """Whether a blob is measured at all: large enough, and of class size or (with the split
    on) larger than any class but whole in the block (several objects joined)."""
    if rules.too_small(blob):
        return False
    if rules.may_hold_class(blob):
        return True
    c0, r0, c1, r1 = blob.bbox_px
    return (rules.split.enabled and c1 - c0 < rules.whole_px and r1 - r0 < rules.whole_px
            and (blob.length_m > rules.largest_m[0] or blob.width_m > rules.largest_m[1]))


def blob_candidates(chip: Chip, blob: Blob, rules: Rules) -> list[Candidate]:
    """Every candidate one blob gives: whole or in parts, and grown."""
    found = _whole(chip, blob, rules)
    if rules.split.enabled:
        found = _parts(chip, blob, found, rules)
    if rules.split.grow_m and rules.judging and any(c.det.category == "aircraft" for c in found):
        found += _grown(chip, blob, rules)
    return found


def block_candidates(sources: tuple, windows: tuple[Window, Window], *, scene: Scene,
                     noise: NoiseModel, rules: Rules) -> Iterator[list[Candidate]]:
    """Pass 2 in one block: the candidates of each blob of the mask whose top-left lies in the
    block's core, a list per blob.

    Parameters
    ----------
    sources : (BEFORE, AFTER on the grid, mask reader)
        This thread's handles; the mask reader reads the pass-1 mask (the
        :class:`~pipeline.io.outputs.MaskWriter` itself or one of its readers).
    windows : (core, padded) Window
    scene, noise, rules
        The pair, its noise model, and what candidates are made under.
    """
    core, padded = windows
    objects = sources[2].read(padded) == 1
    blobs, labels = find_blobs(objects, None, rules.res_m, window=padded, core=core)
    for blob in blobs:
        if _considered(blob, rules):
            chip = read_chip(blob, labels, padded, sources, scene=scene, noise=noise, rules=rules)
            yield blob_candidates(chip, blob, rules)


def _seen_object(chip: Chip, in_box: np.ndarray, holding: np.ndarray, rules: Rules
                 ) -> np.ndarray | None:
    """The aircraft inside a sighting's box as the image that holds it shows it: what stands
    out of the ground around the box, or changed, in the piece(s) reaching the box's middle
    half; the ellipse the box holds when that is under a tenth of it. None without ground
    around the box."""
    ring = chip.ring(in_box, rules.ring_px)
    if ring.sum() < 8:
        return None
    seen = (stands_out(holding.mean(axis=0), ring, relative=0.05) | (chip.mask == 1)) & in_box
    seen = cv2.morphologyEx(seen.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(in_box)
    r0, r1, c0, c1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    middle = np.zeros_like(in_box)
    middle[r0 + (r1 - r0) // 4:r1 - (r1 - r0) // 4, c0 + (c1 - c0) // 4:c1 - (c1 - c0) // 4] = True
    _, labels = cv2.connectedComponents(seen, connectivity=8)
    keep = np.unique(labels[middle & (labels > 0)])
    region = np.isin(labels, keep[keep > 0])
    if region.sum() < 0.1 * in_box.sum():
        region = np.zeros(in_box.shape, np.uint8)
        cv2.ellipse(region, (((c0 + c1 - 1) / 2, (r0 + r1 - 1) / 2), (float(c1 - c0),
                                                                    float(r1 - r0)), 0.0), 1, -1)
        region = region.astype(bool) & in_box
    return region


def sighting_candidates(sources: tuple, sightings: list, *, scene: Scene, noise: NoiseModel,
                        rules: Rules) -> Iterator[list[Candidate]]:
    """Candidates from the detector: each aircraft one image shows and the other does not
    (:class:`pipeline.detect.fusion.Sighting`), measured as that image shows it inside its box
    and classified as an aircraft, its change the sighting's; for the verifier alone to judge.
    Sightings on nodata or with no ground around them give none."""
    aircraft = [c for c in rules.classes if c.category == "aircraft"]
    for s in sightings:
        x0, y0, x1, y1 = (int(round(v)) for v in s.box[:4])
        chip = read_chip_at(chip_window((x0, y0, x1, y1), scene, rules), sources,
                            lambda mask: np.zeros(mask.shape, bool), scene=scene, noise=noise,
                            rules=rules)
        c0, r0 = chip.offset
        in_box = np.zeros(chip.mask.shape, bool)
        in_box[max(y0 - r0, 0):max(y1 - r0, 0), max(x0 - c0, 0):max(x1 - c0, 0)] = True
        if in_box.sum() < 16 or chip.valid[in_box].mean() < 0.9:
            continue
        holding = chip.after if s.change == "appeared" else chip.before
        region = _seen_object(chip, in_box, holding, rules)
        if region is None or region.sum() < rules.difference.min_pixels:
            continue
        found = replace(measure(region, chip.offset, rules.res_m, score=chip.score),
                        label=-1)
        ring = chip.ring(region, rules.ring_px)
        det = classify_blob(found, chip.before, chip.after, region, ring, aircraft,
                            res_m=rules.res_m, chip_offset_px=chip.offset, rules=False)
        if det is None:
            continue
        det = replace(det, change=s.change, found_by="detector")
        x = verifier.candidate_features(found, det, chip.before, chip.after, region, ring,
                                        score=chip.score, gain=chip.gain, res_m=rules.res_m,
                                        blob_sigma=rules.difference.blob_sigma)
        yield [Candidate(det, False, x, None)]
