"""End-to-end behaviour on synthetic airbase scenes with known truth (pipeline.testing.synth)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from pipeline.evaluate import evaluate, load_features
from pipeline.run import run_pair
from pipeline.testing import synth


def _scores(truth_path, det_path):
    return evaluate(load_features(truth_path), load_features(det_path))


@pytest.fixture(scope="module")
def sample_run(sample_pair, tmp_path_factory):
    before, after, truth = sample_pair
    out = tmp_path_factory.mktemp("sample") / "out"
    return run_pair(before, after, out), out, truth


def test_sample_pair_scores_f1_above_095(sample_run):
    _, out, truth = sample_run
    assert _scores(truth, out / "detections.geojson")[("all", "all")].f1 >= 0.95


def test_sample_pair_every_change_found_with_category_and_change(sample_run):
    _, out, truth = sample_run
    truth_f = load_features(truth)
    scores = _scores(truth, out / "detections.geojson")
    # the story of the seed: an An-124 appears, Ka-52s and S-400 launchers leave
    kinds = {(f["properties"]["category"], f["properties"]["change"]) for f in truth_f}
    assert ("aircraft", "appeared") in kinds and ("launcher", "disappeared") in kinds
    for group in kinds:
        assert scores[group].recall == 1.0, (group, scores[group])


def test_sample_pair_shift_within_tenth_pixel(sample_run):
    result, _, truth = sample_run
    true_dx, true_dy = json.loads(Path(truth).read_text())["shift_px"]
    co = result.report["coregistration"]
    assert abs(co["shift_x_px"] - true_dx) < 0.1 and abs(co["shift_y_px"] - true_dy) < 0.1, co


def test_sample_outputs_follow_the_contract(sample_run):
    result, out, _ = sample_run
    for name in ("detections.geojson", "report.json", "report.html", "change_mask.tif", "overlay.png"):
        assert (out / name).stat().st_size > 0, name
    fc = json.loads((out / "detections.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == len(result.detections)
    for f in fc["features"]:
        p = f["properties"]
        assert f["geometry"]["type"] == "Polygon"
        lon, lat = np.array(f["geometry"]["coordinates"][0]).T
        assert np.all((35.8 < lon) & (lon < 36.1)) and np.all((35.3 < lat) & (lat < 35.5))  # Hmeimim
        assert p["change"] in ("appeared", "disappeared") and p["length_m"] >= p["width_m"] > 0
        assert 0 <= p["heading_deg"] <= 180 and 0 <= p["score"] <= 1
    report = json.loads((out / "report.json").read_text())
    for key in ("inputs", "overlap", "coregistration", "radiometry", "counts", "detections",
                "timings_s", "version", "config"):
        assert key in report, key
    assert report["overlap"] > 0.99
    with rasterio.open(out / "change_mask.tif") as ds:
        assert ds.profile["tiled"] and ds.overviews(1), "change mask should be a COG"
        with rasterio.open(result.before) as b:
            assert ds.transform == b.transform and ds.crs == b.crs
        mask = ds.read(1)
    assert set(np.unique(mask)) <= {0, 1, 255} and (mask == 1).any()


def _write(pair, folder):
    return synth.write_pair(pair, folder)


@pytest.mark.parametrize("seed, difficulty", [
    # a dark helicopter leaves the apron by a strip of grass; cut to its sharp core (fringe
    # and shadow off) it measures 8.6 x 5.8 m and fits no class, so it is measured again
    # without its shadow only (14.7 x 12.1 m): an aircraft. Since the verifier weighs the
    # aircraft detector's evidence it is on the verifier's edge: the detector barely sees this
    # dark Ka-52, and of the verifiers trained so far two dropped it and one kept it (a known
    # loss: the synthetic suite's easy F1 is 0.977 for it)
    pytest.param(2, "easy", marks=pytest.mark.xfail(
        strict=True, reason="the detector barely sees this dark Ka-52; the fused verifier "
        "drops it")),
    # an airliner as grey as the apron arrives: its blob is 80 % its shadow, which touches no
    # static structure, so it is the shadow of an object that came, not a moved one
    (0, "hard"),
    # the same, and the object's edge is found against its own contrast, not its shadow's:
    # measured with its shadow it was 59 m long and its centre 10 m off the truth's
    (3, "hard")])
def test_aircraft_the_classical_rules_once_missed_are_found(tmp_path, seed, difficulty):
    _write(synth.make_pair(seed=seed, size_px=1024, scenario="random", difficulty=difficulty),
           tmp_path)
    run_pair(tmp_path / "before.tif", tmp_path / "after.tif", tmp_path / "out")
    scores = _scores(tmp_path / "truth.geojson", tmp_path / "out" / "detections.geojson")
    aircraft = [s for (category, _), s in scores.items() if category == "aircraft"]
    assert sum(s.fn for s in aircraft) == 0 and sum(s.fp for s in aircraft) == 0, scores


@pytest.mark.parametrize("shift", [(7.63, -5.21), (-7.9, 3.45), (0.37, 0.18), (-3.3, -7.77)])
def test_synthetic_shift_recovered_within_tenth_pixel_and_no_change_gives_no_detection(tmp_path, shift):
    pair = synth.make_pair(seed=11, size_px=768, shift_px=shift, scenario="no-change")
    _write(pair, tmp_path)
    result = run_pair(tmp_path / "before.tif", tmp_path / "after.tif", tmp_path / "out")
    co = result.report["coregistration"]
    assert abs(co["shift_x_px"] - shift[0]) < 0.1 and abs(co["shift_y_px"] - shift[1]) < 0.1, co
    assert result.detections == []


@pytest.mark.slow
def test_after_in_another_crs_and_pixel_size_lands_on_before_grid(tmp_path):
    """AFTER reprojected to Web Mercator at 0.65 m (cubic) finds what the pair on one grid
    finds, within 0.05 of its F1 over two scenes (seeds 12 and 13: none of the verifier's
    training scenes; one scene alone holds 7 objects, and an aircraft the verifier scores at
    its threshold may fall either side of it after resampling)."""
    native, other = [], []
    for seed in (12, 13):
        folder = tmp_path / str(seed)
        pair = synth.make_pair(seed=seed, size_px=1024, shift_px=(1.7, -2.2), scenario="random")
        _write(pair, folder)
        src = folder / "after.tif"
        dst = folder / "after_3857.tif"
        with rasterio.open(src) as ds:
            transform, width, height = calculate_default_transform(
                ds.crs, "EPSG:3857", ds.width, ds.height, *ds.bounds, resolution=0.65)
            profile = ds.profile | {"crs": "EPSG:3857", "transform": transform, "width": width,
                                    "height": height}
            with rasterio.open(dst, "w", **profile) as out:
                for b in range(1, ds.count + 1):
                    reproject(rasterio.band(ds, b), rasterio.band(out, b),
                              resampling=Resampling.cubic)
        result = run_pair(folder / "before.tif", dst, folder / "out")
        assert result.report["inputs"]["after"]["crs"] == "EPSG:3857"
        co = result.report["coregistration"]
        assert abs(co["shift_x_px"] - 1.7) < 0.15 and abs(co["shift_y_px"] + 2.2) < 0.15, co
        run_pair(folder / "before.tif", src, folder / "native")
        native.append(_scores(folder / "truth.geojson", folder / "native" / "detections.geojson"))
        other.append(_scores(folder / "truth.geojson", folder / "out" / "detections.geojson"))

    def f1(scores):
        tp, fp, fn = (sum(getattr(s[("all", "all")], k) for s in scores)
                      for k in ("tp", "fp", "fn"))
        return 2 * tp / max(1, 2 * tp + fp + fn)
    assert f1(native) >= 0.9
    assert f1(other) >= f1(native) - 0.05, (other, native)


def test_command_line_and_eval_on_the_sample(sample_pair, tmp_path):
    before, after, truth = sample_pair
    out = tmp_path / "cli"
    bin_dir = Path(sys.executable).parent
    done = subprocess.run([bin_dir / "detect-changes", before, after, "--out", out, "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "detections" in done.stdout
    ev = subprocess.run([bin_dir / "detect-changes-eval", truth, out / "detections.geojson"],
                        capture_output=True, text=True, check=True).stdout
    last = ev.strip().splitlines()[-1].split()
    assert last[:2] == ["all", "all"] and float(last[-1]) >= 0.95
