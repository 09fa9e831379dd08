"""The local level field (radiometry.level_m): what a linear map leaves of haze that varies over
a scene is removed, objects are not, and any window of the field equals the whole scene's."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipeline.change.radiometry import LevelField, Radiometry, fit_level, normalise
from pipeline.config import Config
from pipeline.evaluate import evaluate, load_features
from pipeline.run import run_pair


def _level(shape, rng):
    """A smooth level of about +-12 DN over the scene (haze), as a function of pixel position."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    return (12 * np.sin(2 * np.pi * (x + 0.6 * y) / (1.5 * shape[1]) + phase)).astype(np.float32)


def test_fit_level_finds_the_haze_and_not_the_objects():
    rng = np.random.default_rng(3)
    m, n, cell = 120, 160, 10
    level = _level((m, n), rng)
    before = 120 + rng.normal(0, 6, (3, m, n)).astype(np.float32)
    after = before + level + rng.normal(0, 2, (3, m, n)).astype(np.float32)
    objects = np.zeros((m, n), bool)
    for r, c in rng.integers(0, [m - 6, n - 6], (25, 2)):
        objects[r:r + 6, c:c + 6] = True  # 6 x 6 cells of 20 x 20: under half of any node's
    after[:, objects] += 60
    valid = np.ones((m, n), bool)
    valid[:, :30] = False  # a nodata strip: its nodes take their nearest measured neighbour's
    field = fit_level(before, after, valid, cell=cell, factor=(4.0, 4.0))
    assert field.levels.shape == (3, m // cell + 1, n // cell + 1)
    got = field.at(Window(0, 0, 4 * n, 4 * m))[:, ::4, ::4]  # at the coarse pixels' corners
    inside = valid.copy()
    inside[:, :30 + cell] = False
    err = np.abs(got - level[None])[:, inside & ~objects]
    assert np.percentile(err, 95) < 2.5, np.percentile(err, 95)
    # the objects stand out of what the field leaves by nearly all of their 60 DN
    left = (after - got - before)[:, objects & inside]
    assert np.median(left) > 55


def test_a_window_of_the_field_equals_the_whole_scene():
    rng = np.random.default_rng(1)
    field = LevelField(np.arange(6) * 160.0, np.arange(5) * 160.0,
                       rng.normal(0, 10, (3, 5, 6)).astype(np.float32))
    whole = field.at(Window(0, 0, 1000, 1000))
    for col, row, w, h in [(0, 0, 17, 900), (333, 211, 129, 77), (799, 650, 201, 350), (5, 999, 3, 1)]:
        np.testing.assert_array_equal(field.at(Window(col, row, w, h)),
                                      whole[:, row:row + h, col:col + w])
    # constant beyond the outer nodes, the nodes' own levels at their pixel corners
    beyond = field.at(Window(800, 0, 200, 1))  # the last nodes lie on column 800
    assert (beyond == beyond[:, :, :1]).all()
    assert np.allclose(whole[:, 160, 320], field.levels[:, 1, 2], atol=0.3)  # half a pixel off


def test_report_json_radiometry_gives_the_field_back():
    rng = np.random.default_rng(2)
    rad = Radiometry("linear-quantile", "per-band", (1.1, 0.9), (-3.0, 4.0),
                     LevelField(np.arange(3) * 100.0, np.arange(4) * 100.0,
                                rng.normal(0, 5, (2, 4, 3)).astype(np.float32)))
    back = Radiometry.from_dict(rad.as_dict())
    after = rng.uniform(0, 255, (2, 40, 50)).astype(np.float32)
    w = Window(120, 170, 50, 40)
    np.testing.assert_allclose(normalise(after, back, w), normalise(after, rad, w), atol=0.006)
    with pytest.raises(ValueError, match="window"):
        normalise(after, rad)


@pytest.mark.slow
def test_haze_over_the_sample_is_removed_and_every_change_found(sample_pair, tmp_path):
    """AFTER under a haze of +-15 DN across the scene: one linear map leaves it all, the score's
    unit grows fivefold and half the changes are lost; the level field gives them back."""
    before, after, truth = sample_pair
    with rasterio.open(after) as ds:
        data, profile = ds.read().astype(np.float32), ds.profile
    y, x = np.mgrid[0:data.shape[1], 0:data.shape[2]]
    data += 15 * np.sin(2 * np.pi * (x + y) / 1400.0)
    hazy = tmp_path / "hazy.tif"
    with rasterio.open(hazy, "w", **profile) as ds:
        ds.write(np.clip(np.round(data), 0, 255).astype(np.uint8))
    runs = {}
    for name, pair, level_m in (("clear", (before, after), None), ("hazy", (before, hazy), None),
                                ("hazy, no field", (before, hazy), 0.0)):
        # the control runs on the difference alone: the aircraft detector would find the
        # changes the haze hides from it (its own evidence, not the level field's)
        config = Config() if level_m is None else \
            Config.model_validate({"radiometry": {"level_m": level_m},
                                   "detector": {"enabled": False}})
        out = tmp_path / name.replace(", ", "_").replace(" ", "_")
        result = run_pair(*pair, out, config)
        scores = evaluate(load_features(truth), load_features(out / "detections.geojson"))
        runs[name] = (max(result.report["radiometry"]["score_unit"]), scores[("all", "all")])
    clear_unit, clear = runs["clear"]
    unit, scores = runs["hazy"]
    assert unit <= 1.2 * clear_unit, runs
    assert scores.recall == 1.0 and scores.f1 >= 0.95, runs
    assert clear.f1 >= 0.95, runs
    # the control: without the field (and the detector) the haze does the harm the test is
    # about
    unit0, scores0 = runs["hazy, no field"]
    # (the noise unit inflated nearly fivefold; the classical rules then take a haze edge
    # for a change, where the run with the field makes none)
    assert unit0 >= 3 * clear_unit and scores0.f1 < scores.f1, runs


@pytest.mark.parametrize("fails", ["level", "fit"])
def test_the_level_read_beside_the_fit_fails_cleanly_either_way(tmp_path, monkeypatch, fails):
    # the level field's cells are read on the workers while the linear map is fitted: an error
    # of either is raised (the read finished first, before the scene's files close) and
    # nothing is published
    import threading
    import time

    from pipeline.change import noise
    from pipeline.testing import synth

    paths = synth.write_pair(synth.make_pair(seed=4, size_px=256), tmp_path / "in")
    config = Config().with_overrides({"coregistration": {"grid": 2, "window_px": 128},
                                      "processing": {"threads": 2}})
    real = noise.coarse_pair
    ended = threading.Event()

    def coarse_pair(*args, **kwargs):
        time.sleep(0.5)  # still reading when the fit fails
        if fails == "level":
            raise OSError("level: unreadable block")
        try:
            return real(*args, **kwargs)
        finally:
            ended.set()

    def fit_linear_values(*args, **kwargs):
        raise OSError("fit: no memory")

    monkeypatch.setattr("pipeline.run.coarse_pair", coarse_pair)
    if fails == "fit":
        monkeypatch.setattr(noise, "fit_linear_values", fit_linear_values)
    with pytest.raises(OSError, match=fails):
        run_pair(paths["before"], paths["after"], tmp_path / "out", config)
    assert fails == "level" or ended.is_set()
    assert list((tmp_path / "out").iterdir()) == []
