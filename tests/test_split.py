"""Blobs that join several aircraft at narrow necks are cut into them (pipeline.detect.blobs.split_at_necks)."""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from affine import Affine
from conftest import write_tif

from pipeline.config import Config
from pipeline.detect.blobs import Blob, split_at_necks
from pipeline.detect.classify import Detection, one_per_object
from pipeline.run import run_pair

RES_M = 0.5
SIZE_PX = 512
# a regional airliner seen from above: 28 m long, 26 m span (light-aircraft only: too wide for a
# helicopter or a combat jet, too short for a medium transport)
LENGTH_M, SPAN_M = 28.0, 26.0


def _aircraft(canvas: np.ndarray, centre_px: tuple[float, float], value: int) -> None:
    """Draw a plane pointing north: fuselage 4 m wide, wings tapering from a 6 m chord at the
    root to 2 m at the tips, tailplane."""
    cx, cy = centre_px

    def poly(points_m):
        pts = np.array(points_m, float) / RES_M + (cx, cy)
        cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], value, cv2.LINE_8, shift=4)

    half, tail = SPAN_M / 2, LENGTH_M / 2
    poly([(-2, -tail), (2, -tail), (2, tail), (-2, tail)])                        # fuselage
    poly([(-half, 0), (-2, -3.5), (2, -3.5), (half, 0), (half, 2), (2, 2.5), (-2, 2.5),
          (-half, 2)])                                                            # wings
    poly([(-5, tail - 3), (5, tail - 3), (5, tail - 0.5), (-5, tail - 0.5)])      # tailplane


def _scene(folder, centres_px) -> tuple:
    """BEFORE: bare concrete with sensor noise; AFTER: the same with white aircraft at
    ``centres_px`` (col, row). 3-band uint8 GeoTIFFs at 0.5 m."""
    rng = np.random.default_rng(7)
    ground = np.full((SIZE_PX, SIZE_PX), 95, np.uint8)
    after = ground.copy()
    for c in centres_px:
        _aircraft(after, c, 215)
    transform = Affine(RES_M, 0, 500000.0, 0, -RES_M, 3920000.0)

    def noisy(img):
        bands = [np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
                 for _ in range(3)]
        return np.stack(bands)

    folder.mkdir(parents=True, exist_ok=True)
    before = write_tif(folder / "before.tif", noisy(ground), transform=transform)
    after = write_tif(folder / "after.tif", noisy(after), transform=transform)
    return before, after


def _config(*, split: bool = True, block_px: int = 1024) -> Config:
    return Config().with_overrides({
        "split": {"enabled": split},
        # the coregistration windows need texture this flat scene lacks; nothing is shifted
        "coregistration": {"enabled": False},
        "processing": {"block_px": block_px}})


def _aircraft_found(result):
    return sorted(((d.klass, d.change, round(d.blob.centroid_px[0])) for d in result.detections
                   if d.category == "aircraft"), key=lambda t: t[2])


# wingtip to wingtip: the wings' ends meet, the fuselages lie one span apart
PAIR_PX = [(SIZE_PX / 2 - SPAN_M / 2 / RES_M, SIZE_PX / 2),
           (SIZE_PX / 2 + SPAN_M / 2 / RES_M, SIZE_PX / 2)]


@pytest.fixture(scope="module")
def parked_pair(tmp_path_factory):
    return _scene(tmp_path_factory.mktemp("pair"), PAIR_PX)


def test_two_aircraft_wingtip_to_wingtip_give_two_detections(parked_pair, tmp_path):
    result = run_pair(*parked_pair, tmp_path / "out", _config())
    found = _aircraft_found(result)
    assert [(k, ch) for k, ch, _ in found] == [("light-aircraft", "appeared")] * 2, found
    for (_, _, col), (true_col, _) in zip(found, PAIR_PX):
        assert abs(col - true_col) <= 4 / RES_M  # each centred on its own fuselage
    for d in result.detections:  # each sized as one aircraft, not as the pair
        assert d.blob.length_m <= LENGTH_M + 4 and d.blob.width_m <= SPAN_M + 4, d.blob


def test_without_split_the_pair_is_one_larger_detection(parked_pair, tmp_path):
    # the difference's candidates alone: with the detector, its box of one of the two aircraft
    # is kept over the pair's blob (one_per_object), and the other aircraft is lost all the same
    off = {"detector": {"enabled": False}}
    found = _aircraft_found(run_pair(*parked_pair, tmp_path / "out",
                                     _config(split=False).with_overrides(off)))
    assert len(found) == 1 and found[0][0] == "medium-transport", found
    found = _aircraft_found(run_pair(*parked_pair, tmp_path / "det", _config(split=False)))
    assert len(found) == 1 and found[0][0] == "light-aircraft", found


def test_split_is_the_same_in_small_blocks(parked_pair, tmp_path):
    # the difference's candidates alone: the detector sees each block through its own window,
    # and its scores (so the verifier's) differ by block size in their last digits
    off = {"detector": {"enabled": False}}
    whole = run_pair(*parked_pair, tmp_path / "whole", _config(block_px=1024).with_overrides(off))
    blocks = run_pair(*parked_pair, tmp_path / "blocks", _config(block_px=128).with_overrides(off))
    assert [(d.klass, d.blob.bbox_px, round(d.blob.length_m, 2), round(d.blob.width_m, 2))
            for d in blocks.detections] == [
        (d.klass, d.blob.bbox_px, round(d.blob.length_m, 2), round(d.blob.width_m, 2))
        for d in whole.detections]


def test_single_aircraft_is_not_split(tmp_path):
    before, after = _scene(tmp_path / "one", [(SIZE_PX / 2, SIZE_PX / 2)])
    found = _aircraft_found(run_pair(before, after, tmp_path / "out", _config()))
    assert [(k, ch) for k, ch, _ in found] == [("light-aircraft", "appeared")], found


def _disc(shape, centre, radius):
    img = np.zeros(shape, np.uint8)
    cv2.circle(img, centre, radius, 1, -1)
    return img.astype(bool)


def test_two_bodies_joined_by_a_thin_bridge_are_two_parts():
    blob = _disc((80, 160), (40, 40), 20) | _disc((80, 160), (120, 40), 20)
    blob[38:42, 40:120] = True  # a 2 m bridge of change between two 20 m bodies
    parts = split_at_necks(blob, RES_M, core_width_m=5.0, min_separation_m=5.0)
    assert parts.max() == 2
    assert (parts > 0).sum() == blob.sum()  # every pixel goes to a part
    assert len({parts[40, 40], parts[40, 120]}) == 2


def test_one_body_with_thin_wings_stays_whole():
    plane = np.zeros((120, 120), np.uint8)
    _aircraft(plane, (60, 60), 1)
    parts = split_at_necks(plane.astype(bool), RES_M, core_width_m=5.0, min_separation_m=5.0)
    assert parts.max() == 1 and (parts == 1).sum() == plane.astype(bool).sum()


def test_split_refuses_a_3d_array():
    with pytest.raises(ValueError, match="2D"):
        split_at_necks(np.ones((2, 4, 4), bool), RES_M, core_width_m=5.0, min_separation_m=5.0)


def _rect_det(id_, change, c0, r0, c1, r1, category="aircraft"):
    corners = ((c0, r0), (c1, r0), (c1, r1), (c0, r1))
    blob = Blob((c0, r0, c1, r1), (c1 - c0) * (r1 - r0), ((c0 + c1) / 2, (r0 + r1) / 2),
                corners, (c1 - c0) / 2, (r1 - r0) / 2, (c1 - c0) * (r1 - r0) / 4, 0.0, 6.0, 9.0)
    return Detection(blob, "helicopter", category, change, 0.9, 0.8, 1.0, 0.1, id_)


def test_two_pieces_of_one_object_are_one_detection():
    # a helicopter cut at its rotor into a 28 x 18 px piece and a 20 x 18 px one that overlaps
    # it by a third of its area: the larger stays
    large = _rect_det("a", "appeared", 100, 100, 128, 118)
    small = _rect_det("b", "appeared", 120, 100, 140, 118)
    # beside them, not counted against them: another object, the other change, a launcher
    apart = _rect_det("c", "appeared", 140, 100, 160, 118)  # touches the small piece only
    gone = _rect_det("d", "disappeared", 118, 100, 138, 118)
    truck = _rect_det("e", "appeared", 110, 104, 124, 110, category="launcher")
    dets = [large, small, apart, gone, truck]
    assert [d.id for d in one_per_object(dets, max_overlap=0.3)] == ["a", "c", "d", "e"]
    # the share is of the smaller one's area: 8 of 20 columns is 0.4
    assert [d.id for d in one_per_object(dets, max_overlap=0.45)] == ["a", "b", "c", "d", "e"]
    assert one_per_object(dets, max_overlap=1.0) == dets


def test_of_two_detections_of_one_object_the_detectors_is_kept_over_the_larger():
    # a difference blob holding an aircraft and its shadow (40 x 18 px) and the detector's box
    # of the aircraft inside it (28 x 18 px): the detector's, though smaller
    blob = _rect_det("a", "appeared", 100, 100, 140, 118)
    seen = replace(_rect_det("b", "appeared", 100, 100, 128, 118), found_by="detector")
    assert [d.id for d in one_per_object([blob, seen], max_overlap=0.3)] == ["b"]
    assert [d.id for d in one_per_object([seen, blob], max_overlap=0.3)] == ["b"]
    # of two the detector found, the larger; and it is of one change only
    other = replace(_rect_det("c", "appeared", 96, 100, 136, 118), found_by="detector")
    assert [d.id for d in one_per_object([blob, seen, other], max_overlap=0.3)] == ["c"]
    gone = replace(_rect_det("d", "disappeared", 100, 100, 128, 118), found_by="detector")
    assert [d.id for d in one_per_object([blob, gone], max_overlap=0.3)] == ["a", "d"]


def _over_markings(folder) -> tuple:
    """BEFORE: dark asphalt with a white 12 x 7 m band painted on it (a runway number); AFTER:
    a white aircraft parked over it, the roots of its wings on the band, the same white in both
    images: the change mask loses the wing beyond it."""
    rng = np.random.default_rng(11)
    ground = np.full((SIZE_PX, SIZE_PX), 60, np.uint8)
    cx, cy = SIZE_PX / 2, SIZE_PX / 2
    band = (slice(int(cy - 4 / RES_M), int(cy + 3 / RES_M)),
            slice(int(cx - 6 / RES_M), int(cx + 6 / RES_M)))
    ground[band] = 215
    after = ground.copy()
    _aircraft(after, (cx, cy), 215)
    transform = Affine(RES_M, 0, 500000.0, 0, -RES_M, 3920000.0)

    def noisy(img):
        return np.stack([np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
                         for _ in range(3)])

    folder.mkdir(parents=True, exist_ok=True)
    return (write_tif(folder / "before.tif", noisy(ground), transform=transform),
            write_tif(folder / "after.tif", noisy(after), transform=transform))


def _grow_config(grow_m: float) -> Config:
    return _config().with_overrides({"split": {"grow_m": grow_m}})


def test_aircraft_cut_by_markings_is_measured_whole(tmp_path):
    pair = _over_markings(tmp_path / "pair")
    whole = [d for d in run_pair(*pair, tmp_path / "grown", _grow_config(8.0)).detections
             if d.category == "aircraft"]
    # one aircraft, as long and wide as the drawn one and centred on it (the pieces' own
    # detections overlap it and give way: split.max_overlap)
    assert len(whole) == 1, whole
    d = whole[0]
    assert d.change == "appeared" and abs(d.blob.length_m - LENGTH_M) <= 3, d.blob
    assert math.dist(d.blob.centroid_px, (SIZE_PX / 2, SIZE_PX / 2)) <= 2 / RES_M, d.blob
    assert abs(d.blob.width_m - SPAN_M) <= 3, d.blob
    # without it the mask alone measures the aircraft without the wing the band hides (the
    # verifier, told to keep everything, shows it)
    c = _grow_config(0.0)
    # every detection kept, overlapping or not: the detector's whole one would outweigh them
    c = c.with_overrides({"verifier": {"threshold": 0.0}, "split": {"max_overlap": 1.0}})
    found = [d for d in run_pair(*pair, tmp_path / "pieces", c).detections
             if d.category == "aircraft"]
    pieces = [d for d in found if d.found_by == "difference"]
    assert pieces and all(p.blob.width_m < SPAN_M - 6 for p in pieces), pieces
    # the aircraft detector sees it whole, whatever the mask kept
    assert any(d.found_by == "detector" and abs(d.blob.width_m - SPAN_M) <= 3 for d in found), found
