"""Claims on real imagery from ../shared/data (skipped with the reason when it is absent)."""
import json

import pytest
from conftest import shared_dataset

from pipeline.config import Config
from pipeline.io.raster import wrap_plain_image
from pipeline.run import run_pair

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _config(**input_):
    return Config().with_overrides({"input": input_})


def test_arosics_s2_pair_shift_matches_arosics(tmp_path):
    d = shared_dataset("arosics-s2-inter1")
    ref = next(d.glob("ref_*.jp2"))
    tgt = next(d.glob("tgt_*.jp2"))
    # nodata 0 is not declared in these files (SOURCE.md): say so explicitly
    result = run_pair(ref, tgt, tmp_path / "out", _config(nodata=0))
    co = result.report["coregistration"]
    # AROSICS: +0.72 / -1.89 px (content displacement of tgt relative to ref)
    assert 0.4 <= co["shift_x_px"] <= 1.0, co
    assert -2.1 <= co["shift_y_px"] <= -1.6, co
    assert 0.55 < result.report["overlap"] < 0.65  # SOURCE.md: 0.599
    # 10 m pixels: an aircraft is a few pixels, and the detector (upsampling each block 100
    # times in area) is not run
    assert not result.report["detector"]["used"]
    assert "detector.max_pixel_m" in result.report["detector"]["reason"]


def _airbus(name):
    d = shared_dataset("airbus-aircraft-sample")
    return next((d / "images").glob(f"{name}*.jpg"))


def test_airbus_g5_recut_control_shift_and_no_detections(tmp_path):
    before = wrap_plain_image(_airbus("b3c7c22d"), tmp_path / "before.tif", gsd_m=0.5)
    after = wrap_plain_image(_airbus("fc8f9dc5"), tmp_path / "after.tif", gsd_m=0.5)
    result = run_pair(before, after, tmp_path / "out", _config(nodata=0))
    co = result.report["coregistration"]
    # SOURCE.md: the same acquisition re-cut with an offset of (-3.49, -12.33) px
    assert abs(co["shift_x_px"] + 3.49) < 0.15 and abs(co["shift_y_px"] + 12.33) < 0.15, co
    assert co["quality"] > 0.5
    assert result.detections == []
    fc = json.loads((tmp_path / "out" / "detections.geojson").read_text())
    assert fc["features"] == []


def test_airbus_g8_overlapping_crops_with_true_offset_have_no_residual_shift(tmp_path):
    # SOURCE.md: ef92f434[y + 768, x - 512] == e9021b38[y, x]: AFTER's pixel (0, 0) lies at
    # BEFORE's (512, -768)
    before = wrap_plain_image(_airbus("e9021b38"), tmp_path / "before.tif", gsd_m=0.5)
    after = wrap_plain_image(_airbus("ef92f434"), tmp_path / "after.tif", gsd_m=0.5,
                             offset_px=(512, -768))
    result = run_pair(before, after, tmp_path / "out", _config(nodata=0))
    co = result.report["coregistration"]
    assert abs(co["shift_x_px"]) < 0.05 and abs(co["shift_y_px"]) < 0.05, co
    assert 0.5 < result.report["overlap"] < 0.62  # SOURCE.md: 56 %
    assert result.detections == []
