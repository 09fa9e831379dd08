"""``processing.pixel_m``: inputs finer than the analysis pixel are read averaged over whole
pixels, every stage works on those, and the outputs stay on the BEFORE grid (the change mask
on BEFORE's own pixels, pixel positions and the shift in BEFORE pixels)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio
from conftest import write_tif
from rasterio.transform import from_origin

from pipeline import io as rio
from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.evaluate import evaluate, load_features
from pipeline.run import coregister_pair, run_pair

AT_1M = Config().with_overrides({"processing": {"pixel_m": 1.0}})


def test_a_file_read_averaged_holds_the_mean_of_each_whole_cell(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (3, 201, 261), dtype=np.uint8)
    path = write_tif(tmp_path / "a.tif", data, transform=from_origin(500000, 4000000, 0.5, 0.5))
    with rio.open_raster(path, "BEFORE") as ds:
        assert rio.averaging_factor(ds, 1.0) == 2
        assert rio.averaging_factor(ds, 0.9) == 1 and rio.averaging_factor(ds, 0) == 1
    with rio.open_raster(path, "BEFORE", factor=2) as ds:
        # the last row and column, narrower than a cell, are left out
        assert (ds.width, ds.height) == (130, 100)
        assert ds.transform == from_origin(500000, 4000000, 1.0, 1.0)
        assert rio.source_path(ds) == str(path.absolute())
        got = ds.read().astype(float)
    means = data[:, :200, :260].astype(float).reshape(3, 100, 2, 130, 2).mean(axis=(2, 4))
    assert np.abs(got - means).max() <= 0.5


@pytest.fixture(scope="module")
def runs(sample_pair, tmp_path_factory):
    """The sample pair at its own 0.5 m pixels and analysed at 1 m."""
    before, after, truth = sample_pair
    folder = tmp_path_factory.mktemp("pixel")
    native = run_pair(before, after, folder / "native")
    coarse = run_pair(before, after, folder / "coarse", AT_1M)
    return native, coarse, truth


def _scores(run, truth):
    return evaluate(load_features(truth), load_features(run.out_dir / "detections.geojson"))


def test_at_1m_the_sample_pair_still_finds_every_aircraft_change(runs):
    _, coarse, truth = runs
    scores = _scores(coarse, truth)
    for group in (("aircraft", "appeared"), ("aircraft", "disappeared")):
        assert scores[group].recall == 1.0, (group, scores[group])


def test_at_1m_the_sample_pair_finds_its_launchers_with_the_smoothing_kept_in_metres(
        runs, sample_pair, tmp_path):
    _, coarse, truth = runs
    assert _scores(coarse, truth)[("launcher", "disappeared")].recall == 1.0
    assert coarse.report["config"]["difference"]["smoothing_px"] == 0.8  # as given
    # with the smoothing's sigma kept in pixels (twice as wide in metres) they are lost
    wide = run_pair(*sample_pair[:2], tmp_path / "wide", AT_1M.with_overrides(
        {"difference": {"smoothing_px": 1.6}}))
    assert _scores(wide, truth)[("launcher", "disappeared")].recall < 1.0


def test_outputs_at_1m_are_on_the_before_grid(runs, sample_pair):
    native, coarse, truth = runs
    report = json.loads((coarse.out_dir / "report.json").read_text())
    with rasterio.open(sample_pair[0]) as ds:
        width, height, transform = ds.width, ds.height, ds.transform
    assert report["grid"]["width"] == width and report["grid"]["height"] == height
    assert report["analysis"] == {"pixel_size_m": [1.0, 1.0], "factors": [2, 2],
                                  "width": width // 2, "height": height // 2}
    assert report["inputs"]["before"]["width"] == width
    # the shift in BEFORE pixels (the truth's: 2.6, -1.4); measured on 1 m pixels it is 0.3
    # of them off in y (0.15 m), where the run at 0.5 m is within 0.1
    true_dx, true_dy = json.loads(truth.read_text())["shift_px"]
    co = report["coregistration"]
    assert abs(co["shift_x_px"] - true_dx) < 0.35 and abs(co["shift_y_px"] - true_dy) < 0.35, co
    assert (coarse.shift.dx_px, coarse.shift.dy_px) == pytest.approx(
        (co["shift_x_px"], co["shift_y_px"]), abs=1e-4)
    shift, _ = coregister_pair(*sample_pair[:2], AT_1M)
    assert abs(shift.dx_px - true_dx) < 0.35 and abs(shift.dy_px - true_dy) < 0.35
    assert all(0 <= w.col_px < width and 0 <= w.row_px < height for w in shift.windows)
    with rasterio.open(coarse.out_dir / "change_mask.tif") as ds:
        assert (ds.width, ds.height, ds.transform) == (width, height, transform)
        assert ds.colormap(1)[1][:3] == (230, 0, 200)
        mask = ds.read(1)
    # each analysed pixel covers 2 x 2 of BEFORE's
    inner = mask[:height // 2 * 2, :width // 2 * 2]
    assert (inner[::2, ::2] == inner[1::2, 1::2]).all() and (inner[::2, ::2] == inner[::2, 1::2]).all()
    with rasterio.open(native.out_dir / "change_mask.tif") as ds:
        both = (ds.read(1) == 1) & (mask == 1)
    assert both.sum() > 0.6 * (mask == 1).sum()


def test_pixel_positions_at_1m_are_before_pixels(runs):
    native, coarse, _ = runs
    fc = json.loads((coarse.out_dir / "detections.geojson").read_text())
    ref = [d.blob.centroid_px for d in native.detections]
    assert len(fc["features"]) >= 4
    for f in fc["features"]:
        cx, cy = f["properties"]["centroid_px"]
        # the same object measured at 0.5 m lies within a metre or two
        assert min(np.hypot(cx - x, cy - y) for x, y in ref) < 4.0, (cx, cy)


def test_a_path_gdal_cannot_wrap_is_refused_naming_the_file(sample_pair, tmp_path):
    odd = tmp_path / "after?v=2.tif"
    odd.write_bytes(sample_pair[1].read_bytes())
    with pytest.raises(InputError, match=r"cannot have '\?' or '&'") as err:
        run_pair(sample_pair[0], odd, tmp_path / "out", AT_1M)
    assert str(odd) in str(err.value)
    assert not (tmp_path / "out" / "report.json").exists()


def _plain_png(src, dst):
    with rasterio.open(src) as ds:
        pixels = ds.read()
    with rasterio.open(dst, "w", driver="PNG", width=pixels.shape[2], height=pixels.shape[1],
                       count=pixels.shape[0], dtype="uint8") as ds:
        ds.write(pixels)
    return dst


def test_plain_images_at_1m_give_positions_in_their_own_pixels(runs, sample_pair, tmp_path):
    native, _, _ = runs
    before = _plain_png(sample_pair[0], tmp_path / "before.png")
    after = _plain_png(sample_pair[1], tmp_path / "after.png")
    config = AT_1M.with_overrides({"input": {"gsd_m": 0.5}})
    result = run_pair(before, after, tmp_path / "out", config)
    fc = json.loads((result.out_dir / "detections_px.geojson").read_text())
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["grid"]["frame"] == "pixel" and report["analysis"]["factors"] == [2, 2]
    assert report["inputs"]["before"]["path"] == str(before)
    ref = [d.blob.centroid_px for d in native.detections]
    assert len(fc["features"]) >= 4
    for f in fc["features"]:
        xs, ys = np.array(f["geometry"]["coordinates"][0]).T
        cx, cy = f["properties"]["centroid_px"]
        # the outline holds its centre, both in the PNG's own pixels, where the same object
        # measured on the georeferenced pair at 0.5 m lies
        assert xs.min() < cx + 0.5 < xs.max() and ys.min() < cy + 0.5 < ys.max()
        assert min(np.hypot(cx - x, cy - y) for x, y in ref) < 4.0, (cx, cy)


def test_report_html_draws_the_shift_at_1m_as_at_its_own_pixels(runs, sample_pair):
    native, coarse, _ = runs
    with rasterio.open(sample_pair[0]) as ds:
        width = ds.width

    def exaggeration(run):
        html = (run.out_dir / "report.html").read_text()
        return float(re.search(r"exaggerated x(\d+)", html).group(1))

    # report.json's windows are in BEFORE pixels, over the whole scene
    cols = [w["col_px"] for w in coarse.report["coregistration"]["windows"]]
    assert max(cols) > width * 0.6 and max(cols) < width
    # the arrows drawn the same size for the same shift (twice as large if the picture's
    # scale were taken per pixel analysed)
    assert exaggeration(coarse) == pytest.approx(exaggeration(native), rel=0.15)
