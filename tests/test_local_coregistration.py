"""Local co-registration: a shift field for scenes whose displacement varies (relief, lean)."""
import cv2
import numpy as np

from pipeline.config import Config
from pipeline.evaluate import evaluate, load_features
from pipeline.run import run_pair
from pipeline.testing import synth


def test_local_mode_recovers_a_varying_shift_and_the_changes(tmp_path):
    size = 1024
    pair = synth.make_pair(seed=2, size_px=size, scenario="random", shift_px=(1.0, -0.5))
    # the yardstick: the same scene with its constant shift only, registered globally
    synth.write_pair(pair, tmp_path / "flat")
    run_pair(tmp_path / "flat" / "before.tif", tmp_path / "flat" / "after.tif",
             tmp_path / "flat" / "out", Config())
    flat = evaluate(load_features(tmp_path / "flat" / "truth.geojson"),
                    load_features(tmp_path / "flat" / "out" / "detections.geojson"))
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    extra_x, extra_y = -1.0 + 2.5 * cols / size, 1.0 * rows / size  # a lean across the scene
    after = np.stack([cv2.remap(b.astype(np.float32), cols - extra_x, rows - extra_y,
                                cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT) for b in pair.after])
    pair = synth.ScenePair(pair.before, np.clip(after, 0, 255).astype("uint8"), pair.transform,
                           pair.crs, pair.shift_px, pair.objects)
    synth.write_pair(pair, tmp_path)
    c = Config().with_overrides({"coregistration": {"mode": "local"}})
    result = run_pair(tmp_path / "before.tif", tmp_path / "after.tif", tmp_path / "out", c)
    local = result.report["coregistration"]["local"]
    assert local["measured"] >= local["nodes"] // 2
    gc, gr = np.array(local["grid_cols_px"]), np.array(local["grid_rows_px"])
    true_dx = 1.0 + (-1.0 + 2.5 * gc[None, :] / size) + 0 * gr[:, None]
    true_dy = -0.5 + 1.0 * gr[:, None] / size + 0 * gc[None, :]
    err = np.hypot(np.array(local["field_dx_px"]) - true_dx, np.array(local["field_dy_px"]) - true_dy)
    assert np.median(err) < 0.25, err
    scores = evaluate(load_features(tmp_path / "truth.geojson"),
                      load_features(tmp_path / "out" / "detections.geojson"))
    # the lean undone, the changes are found as well as in the scene without it
    assert flat[("all", "all")].f1 >= 0.9
    assert scores[("all", "all")].f1 >= flat[("all", "all")].f1 - 1e-9
