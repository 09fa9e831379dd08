"""The detector's evidence fused with the difference (pipeline.detect.fusion): which sightings
make candidates, where they land on the grid, and the features every candidate gets."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from rasterio.windows import Window

from pipeline.change.difference import disjoint
from pipeline.detect import fusion, verifier
from pipeline.detect.fusion import Sighter, Sightings


def _sightings(before, after, *, threshold=0.5, res_m=0.5):
    arr = [np.asarray(x, np.float32).reshape(-1, 5) for x in (before, after)]
    return Sightings(arr[0], arr[1], threshold, 0.5 * threshold, 0.25, res_m)


def test_an_aircraft_in_both_images_is_no_candidate_even_towed_or_leaning():
    # 40 x 40 px (20 m) at the same stand, 12 px (6 m) apart: towed, or a tail leaning
    s = _sightings([[100, 100, 140, 140, 0.9]], [[112, 100, 152, 140, 0.8]])
    assert s.unpartnered() == []


def test_an_aircraft_gone_is_a_disappeared_candidate():
    s = _sightings([[100, 100, 140, 140, 0.9], [300, 300, 340, 340, 0.9]],
                   [[300, 300, 340, 340, 0.9]])
    (only,) = s.unpartnered()
    assert only.change == "disappeared" and only.centre == (120.0, 120.0)


def test_a_weak_partner_still_partners_and_a_weaker_one_does_not():
    # threshold 0.5: a partner from 0.25 up is the same aircraft, seen less clearly
    assert _sightings([[0, 0, 40, 40, 0.9]], [[0, 0, 40, 40, 0.3]]).unpartnered() == []
    (only,) = _sightings([[0, 0, 40, 40, 0.9]], [[0, 0, 40, 40, 0.2]]).unpartnered()
    assert only.change == "disappeared"


def test_an_aircraft_replaced_by_another_size_on_its_stand_is_both_changes():
    # a 20 m jet replaced by a 35 m airliner, centred on the same stand
    s = _sightings([[100, 100, 140, 140, 0.9]], [[85, 85, 155, 155, 0.9]])
    assert sorted(x.change for x in s.unpartnered()) == ["appeared", "disappeared"]


def test_the_evidence_at_a_place_is_the_best_score_near_it_in_each_image():
    s = _sightings([[100, 100, 140, 140, 0.9]], [[104, 100, 144, 140, 0.3], [600, 600, 640, 640, 1.0]])
    hold, other, margin, size = s.evidence((120.0, 120.0), 20.0, "disappeared")
    assert (hold, other) == (pytest.approx(0.9), pytest.approx(0.3))
    assert margin == pytest.approx(0.6)
    assert size == pytest.approx(0.0, abs=1e-6)  # a 40 px box at 0.5 m is the 20 m length
    assert s.evidence((120.0, 120.0), 20.0, "appeared")[:2] == [pytest.approx(0.3),
                                                               pytest.approx(0.9)]
    assert s.evidence((1000.0, 1000.0), 20.0, "appeared") == [0.0, 0.0, 0.0, 0.0]


def test_with_sightings_appends_the_detector_features_or_nan_without_them():
    from pipeline.detect.blobs import Blob
    from pipeline.detect.candidates import Candidate
    from pipeline.detect.classify import Detection
    blob = Blob((0, 0, 40, 40), 1600, (120.0, 120.0), ((0, 0),) * 4, 20.0, 20.0, 400.0, 0.0,
                5.0, 9.0)
    det = Detection(blob, "combat-jet", "aircraft", "disappeared", 5.0, 1.0, 10.0, 1.0)
    found = [Candidate(replace(det, found_by="detector"), False, np.zeros(3), None),
             Candidate(det, True, None, None)]
    s = _sightings([[100, 100, 140, 140, 0.9]], [])
    got = fusion.with_sightings(found, s)
    assert got[0].features.tolist() == [0, 0, 0, pytest.approx(0.9), 0.0, pytest.approx(0.9),
                                        pytest.approx(0.0, abs=1e-6), 1.0]
    assert got[1].features is None  # not judged: left alone
    assert np.isnan(fusion.with_sightings(found, None)[0].features[3:]).all()


class _FakeDetector:
    """Sees one 20 x 20 px box around the brightest pixel of the picture it is given."""

    threshold = 0.5

    def __init__(self):
        self.sizes = []

    def detect(self, rgb, *, threshold=None):
        self.sizes.append(rgb.shape[:2])
        y, x = np.unravel_index(int(np.argmax(rgb.sum(axis=2))), rgb.shape[:2])
        return np.array([[x - 10, y - 10, x + 10, y + 10, 0.9]], np.float32)


def test_sighter_resamples_to_the_detector_resolution_and_keeps_the_core_on_the_grid():
    det = _FakeDetector()
    sighter = Sighter(det, res_m=0.5, resolution_m=1.0, levels=(None, None))
    core, padded = Window(1000, 2000, 200, 200), Window(900, 1900, 400, 400)
    b = np.zeros((3, 400, 400), np.uint8)
    a = np.zeros((3, 400, 400), np.uint8)
    b[:, 150:154, 250:254] = 255  # in the core: grid (1151.5, 2051.5)
    a[:, 20:24, 20:24] = 255      # in the margin: another block's
    ok = np.ones((400, 400), bool)
    sighter.sight((core, padded), b, ok, a, ok)
    assert det.sizes == [(200, 200), (200, 200)]  # 0.5 m pixels seen at 1 m
    s = sighter.sightings(threshold=None, partner_share=0.5, size_tolerance=0.25)
    assert len(s.after) == 0 and len(s.before) == 1
    cx, cy = (s.before[0, 0] + s.before[0, 2]) / 2, (s.before[0, 1] + s.before[0, 3]) / 2
    assert abs(cx - 1152) <= 2 and abs(cy - 2052) <= 2
    assert s.before[0, 2] - s.before[0, 0] == pytest.approx(40)  # 20 detector px = 40 grid px


def test_sighter_looks_only_near_changes_when_told_and_finds_the_same_aircraft_there():
    core, padded = Window(1000, 2000, 800, 800), Window(900, 1900, 1000, 1000)
    b = np.zeros((3, 1000, 1000), np.uint8)
    b[:, 150:154, 250:254] = 255  # an aircraft in the core: grid (1151.5, 2051.5)
    ok = np.ones((1000, 1000), bool)
    changed = np.zeros((1000, 1000), bool)
    whole = Sighter(_FakeDetector(), res_m=0.5, resolution_m=1.0, levels=(None, None))
    whole.sight((core, padded), b, ok, b, ok, changed)
    near = Sighter(_FakeDetector(), 0.5, 1.0, (None, None), reach_px=40)
    near.sight((core, padded), b, ok, b, ok, changed)  # nothing changed: nothing looked at
    assert near.detector.sizes == [] and near.looked_share == 0.0
    changed[160:170, 260:270] = True  # beside the aircraft
    near.sight((core, padded), b, ok, b, ok, changed)
    assert len(near.detector.sizes) == 2 and near.looked_share < 0.1
    kw = dict(threshold=None, partner_share=0.5, size_tolerance=0.25)
    np.testing.assert_allclose(near.sightings(**kw).before, whole.sightings(**kw).before)
    assert whole.looked_share == 1.0


def test_look_windows_hold_each_change_with_its_reach_apart_or_merged():
    changed = np.zeros((1000, 1000), bool)
    assert fusion.look_windows(changed, 40) == []
    changed[100:110, 100:110] = True
    changed[700:720, 800:810] = True
    looks = fusion.look_windows(changed, 40)
    assert len(looks) == 2
    for rows, cols in looks:  # cells of 16 px: each window holds its change and 40 px around
        inside = changed[rows, cols]
        assert inside.any()
        r, c = np.nonzero(inside)
        assert r.min() >= 40 and c.min() >= 40
        assert rows.stop - rows.start <= 10 + 2 * 40 + 2 * 16 + 20
    # two changes whose reaches overlap share one window (no aircraft sighted twice), beside
    # the far change's
    changed[100:110, 200:210] = True
    assert len(fusion.look_windows(changed, 40)) == 2
    # groups apart whose boxes overlap (an L beside a dot in its crook) are merged too
    assert disjoint([(0, 0, 10, 3), (7, 0, 10, 10), (4, 5, 6, 7), (20, 20, 22, 22)]) \
        == [(0, 0, 10, 10), (20, 20, 22, 22)]
    # changes all over: the whole block
    changed[::100, ::100] = True
    assert fusion.look_windows(changed, 40) == [(slice(0, 1000), slice(0, 1000))]


def test_input_levels_stretch_other_than_8_bit_data(tmp_path):
    import rasterio
    from rasterio.transform import from_origin
    path = tmp_path / "u16.tif"
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, size=(3, 64, 64), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint16",
                       crs="EPSG:32636", transform=from_origin(0, 64, 1, 1)) as ds:
        ds.write(data)
    with rasterio.open(path) as ds:
        lo, hi = fusion.input_levels(ds, [1, 2, 3], None)
    assert np.all(lo >= 1000) and np.all(lo < 1050) and np.all(hi > 2950) and np.all(hi <= 3000)
    pic = fusion.detector_picture(data.astype(np.float32), np.ones((64, 64), bool), (lo, hi),
                                  (64, 64))
    assert pic.shape == (64, 64, 3) and pic.min() == 0.0 and pic.max() == 255.0


def test_detector_picture_resamples_in_the_data_type_and_keeps_nodata_black():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, size=(3, 128, 128)).astype(np.uint8)
    valid = np.ones((128, 128), bool)
    valid[:, :64] = False
    pic = fusion.detector_picture(data, valid, None, (64, 64))
    # 8-bit: averaged by pixel area in 8 bits, nodata 0
    block_mean = data.astype(np.float32).reshape(3, 64, 2, 64, 2).mean(axis=(2, 4))
    assert np.abs(pic[:, 32:] - block_mean.transpose(1, 2, 0)[:, 32:]).max() <= 0.5
    assert np.all(pic[:, :32] == 0)
    # stretched data: nodata stays 0 though the stretch maps 0 to about 101
    u16 = data.astype(np.uint16) * 8 + 1000
    lo, hi = np.full(3, -2000, np.float32), np.full(3, 3040, np.float32)
    pic = fusion.detector_picture(u16, valid, (lo, hi), (64, 64))
    assert np.all(pic[:, :32] == 0)
    expected = (block_mean * 8 + 3000) * 255 / 5040
    assert np.abs(pic[:, 32:] - expected.transpose(1, 2, 0)[:, 32:]).max() <= 0.5


def test_a_verifier_reads_its_own_features_by_name():
    names = [f for f in verifier.FEATURES if f not in fusion.DETECTOR_FEATURES]
    k = verifier.FEATURES.index("log_blob_length")
    tree = {"feature": [names.index("log_blob_length"), 0, 0], "threshold": [1.0, 0, 0],
            "left": [1, 0, 0], "right": [2, 0, 0], "leaf": [False, True, True],
            "value": [0.0, -5.0, 5.0]}
    model = verifier.Verifier({"kind": "trees", "features": names, "baseline": 0.0,
                               "threshold": 0.5, "trees": [tree]})
    assert not model.uses_detector
    x = np.full(len(verifier.FEATURES), math.nan)
    x[k] = 2.0  # long: right, +5, whatever the detector's (NaN) columns hold
    assert model.probability(x) == pytest.approx(1 / (1 + math.exp(-5)))
    with pytest.raises(ValueError, match="not this version"):
        verifier.Verifier({"kind": "trees", "features": names[:-1], "baseline": 0.0,
                           "threshold": 0.5, "trees": []})


def _chip(before, after, mask=None):
    from pipeline.detect.candidates import Chip
    h, w = before.shape[1:]
    mask = np.zeros((h, w), np.uint8) if mask is None else mask
    return Chip(Window(0, 0, w, h), mask, np.zeros((h, w), bool), before, after,
                np.ones((h, w), bool), np.zeros((h, w), np.float32), 1.0)


def _rules():
    from pipeline.config import Config
    from pipeline.detect.candidates import Rules
    from pipeline.io.raster import Grid
    grid = Grid("EPSG:32636", None, 200, 200, (0.5, 0.5))
    return Rules.from_config(Config(), grid, judging=True)


def test_the_object_in_a_sightings_box_is_what_stands_out_there_or_the_box_ellipse():
    from pipeline.detect.candidates import _seen_object
    rng = np.random.default_rng(0)
    ground = 100 + rng.normal(0, 2, (3, 120, 120)).astype(np.float32)
    plane = ground.copy()
    plane[:, 50:70, 40:80] = 200  # fuselage and wings as one bright bar
    plane[:, 40:80, 55:65] = 200
    in_box = np.zeros((120, 120), bool)
    in_box[35:85, 35:85] = True
    seen = _seen_object(_chip(plane, ground), in_box, plane, _rules())
    assert seen[60, 60] and seen[45, 60] and not seen[38, 38]
    assert 0.2 < seen.sum() / in_box.sum() < 0.5
    # nothing stands out (a white aircraft the detector sees on white concrete): the ellipse
    flat = _seen_object(_chip(ground, ground), in_box, ground, _rules())
    assert flat[60, 60] and not flat[36, 36]
    assert flat.sum() / in_box.sum() == pytest.approx(math.pi / 4, abs=0.05)


def test_a_run_weighs_each_aircraft_with_the_detector_and_without_it_is_classical(tmp_path):
    """End to end on a synthetic pair (seed 12: none of the verifier's training scenes): every
    aircraft detection carries the detector's score in each image, higher in the image that
    holds it for most; with the detector off, none does and nothing is found by it."""
    import json

    from pipeline.config import Config
    from pipeline.run import run_pair
    from pipeline.testing import synth
    folder = tmp_path / "pair"
    synth.write_pair(synth.make_pair(seed=12, size_px=1024, scenario="random"), folder)
    runs, reports = {}, {}
    for name, enabled in (("on", True), ("off", False)):
        cfg = Config().with_overrides({"detector": {"enabled": enabled}})
        reports[name] = run_pair(folder / "before.tif", folder / "after.tif", tmp_path / name,
                                 cfg).report["detector"]
        fc = json.loads((tmp_path / name / "detections.geojson").read_text())
        runs[name] = [f["properties"] for f in fc["features"]]
    assert reports["off"] == {"used": False, "reason": "detector.enabled is false"}
    assert reports["on"]["used"] and reports["on"]["sightings"]["before"] >= 3
    aircraft = [p for p in runs["on"] if p["category"] == "aircraft"]
    assert len(aircraft) >= 3
    assert all(p["detector_before"] is not None and p["detector_after"] is not None
               for p in aircraft)
    holds = [(p["detector_after"] if p["change"] == "appeared" else p["detector_before"]) >
             (p["detector_before"] if p["change"] == "appeared" else p["detector_after"])
             for p in aircraft]
    assert sum(holds) >= 0.75 * len(holds)
    assert all(p["detector_before"] is None and p["found_by"] == "difference"
               for p in runs["off"])
