"""The stage boundaries of run.py, each driven on its own: the scene, the registration, the
noise model, the reader pool, the candidates and judge()."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
from rasterio.windows import Window

from pipeline.change.noise import fit_noise_model
from pipeline.config import Config, config_from_mapping
from pipeline.coreg.register import Registration, register
from pipeline.detect import judge as judge_module
from pipeline.detect.candidates import Candidate
from pipeline.detect.judge import Judge, judge
from pipeline.errors import (
    InputError,
    PipelineWarning,
    RegistrationError,
    UnregisteredWarning,
)
from pipeline.io.readers import ReaderPool, stripes
from pipeline.io.scene import open_scene
from pipeline.run import run_pair
from pipeline.testing import synth


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    synth.write_pair(synth.make_pair(seed=13, size_px=512, scenario="random",
                                     shift_px=(1.5, -0.75)), folder)
    return folder / "before.tif", folder / "after.tif"


def test_scene_holds_both_files_checked_and_their_joint_validity(pair):
    with open_scene(*pair, Config(), min_overlap=0.5) as scene:
        assert (scene.grid.width, scene.grid.height) == (512, 512)
        assert scene.b_bands == [1, 2, 3] and scene.a_bands == [1, 2, 3]
        assert scene.validity.overlap > 0.99 and scene.validity.joint.all()
        b, vb, a, va = scene.read((scene.b_ds, scene.a_ds), Window(0, 0, 64, 32))
        assert b.shape == a.shape == (3, 32, 64) and vb.all() and va.all()
        with scene.open_aligned((0.0, 0.0)) as (b_ds, a_grid):
            assert b_ds is not scene.b_ds and not b_ds.closed
        assert b_ds.closed and a_grid.ds.closed  # fresh handles, closed with their context
    assert scene.b_ds.closed and scene.a_ds.closed


def test_scene_refuses_a_pair_covering_too_little(pair):
    with pytest.raises(InputError, match="covers only") as err:
        with open_scene(*pair, Config(), min_overlap=1.01):
            pass
    assert err.value.path == str(pair[1]) and isinstance(err.value, ValueError)


def test_registration_finds_the_shift_and_its_windows(pair):
    with open_scene(*pair, Config()) as scene:
        reg = register(scene, Config())
    assert isinstance(reg, Registration) and reg.field is None and reg.mode == "global"
    assert reg.offset == pytest.approx((1.5, -0.75), abs=0.1)
    assert len(reg.windows) >= 3 and reg.shift.quality > 0.5


def test_going_on_unregistered_is_a_pipeline_warning(pair):
    # neither the windows' consensus (quality 1 is out of reach) nor the ground plane (off)
    strict = config_from_mapping({"coregistration": {"min_quality": 1.0, "ground": False}})
    with open_scene(*pair, strict) as scene:
        with pytest.raises(RegistrationError) as err:
            register(scene, strict)
        assert err.value.path == str(pair[1])
        with pytest.warns(UnregisteredWarning, match="going on unregistered") as caught:
            reg = register(scene, strict, allow_unregistered=True)
    assert issubclass(caught[0].category, PipelineWarning)
    assert reg.offset == (0.0, 0.0) and reg.shift.method == "none (unregistered)"


def test_noise_model_unit_is_the_noise_of_what_the_map_leaves(pair):
    config = Config()
    with open_scene(*pair, config) as scene:
        reg = register(scene, config)
        with scene.on_grid(reg.offset) as a_vrt:
            noise = fit_noise_model(scene, a_vrt, reg.windows, config)
    assert noise.unit.shape == (3,) and np.all(noise.unit > 0)
    # synthetic AFTER differs from BEFORE by a gain and offset and sensor noise of a few levels
    assert np.all(noise.unit < 20)
    assert noise.local is not None and noise.structure_unit > 0
    assert noise.report()["score_unit"] == [round(float(s), 4) for s in noise.unit]


class _Handle:
    opened = []

    def __init__(self):
        self.thread = threading.get_ident()
        self.closed = False
        _Handle.opened.append(self)

    def close(self):
        self.closed = True


@contextmanager
def _open():
    h = _Handle()
    try:
        yield (h,)
    finally:
        h.close()


def test_reader_pool_reads_every_block_once_on_each_workers_own_handles():
    _Handle.opened.clear()
    blocks = [(Window(c, r, 10, 10), None) for r in range(0, 100, 10) for c in range(0, 100, 10)]
    pool = ReaderPool(_open, shared=("shared",), workers=2)
    seen = dict(pool.map(lambda item, readers: readers[0].thread, stripes(blocks, 40)))
    assert sorted((w.row_off, w.col_off) for w in seen) == sorted(
        (w.row_off, w.col_off) for w, _ in blocks)
    # each handle was opened by the thread that read with it, and every one is closed (by it)
    assert set(seen.values()) == {h.thread for h in _Handle.opened}
    assert 1 <= len(_Handle.opened) <= 2 and all(h.closed for h in _Handle.opened)


def test_a_worker_without_a_stripe_takes_the_lower_half_of_the_longest():
    # one stripe of 40 blocks and one of 2: the worker done with the short one goes on with
    # the lower half of what is left of the long one, and no block is done twice. (Later it
    # may hand back a piece the other way, so only each piece is in row order.)
    import time

    blocks = ([(Window(0, r, 10, 10), None) for r in range(0, 400, 10)]
              + [(Window(100, r, 10, 10), None) for r in range(0, 20, 10)])
    pool = ReaderPool(_open, shared=("shared",), workers=2)

    def slow(item, readers):
        time.sleep(0.02)
        return readers[0].thread, time.perf_counter()

    done = list(pool.map(slow, stripes(blocks, 100)))
    assert sorted((w.col_off, w.row_off) for w, _ in done) == sorted(
        (w.col_off, w.row_off) for w, _ in blocks)
    by_thread = {}
    for w, (thread, t) in sorted(done, key=lambda d: d[1][1]):
        by_thread.setdefault(thread, []).append((w.col_off, w.row_off))
    # the worker that went down the short stripe first joined the long one in its lower half
    joined = next(rows for rows in by_thread.values() if rows[0][0] == 100)
    long_rows = [row for col, row in joined if col == 0]
    assert long_rows and long_rows[0] >= 200


def test_reader_pool_hands_a_workers_error_to_the_consumer_and_closes():
    _Handle.opened.clear()
    blocks = [(Window(c, 0, 10, 10), None) for c in range(0, 200, 10)]

    def fail_at_100(item, readers):
        if item[0].col_off == 100:
            raise ValueError("block 100 failed")
        return 1

    with pytest.raises(ValueError, match="block 100"):
        list(ReaderPool(_open, shared=("shared",), workers=2).map(fail_at_100, stripes(blocks, 50)))
    assert all(h.closed for h in _Handle.opened)


def test_one_worker_reads_through_the_shared_handles():
    pool = ReaderPool(_open, shared=("shared",), workers=1)
    got = list(pool.map(lambda item, readers: readers[0], [[(Window(0, 0, 1, 1), None)]]))
    assert got[0][1] == "shared"


def _candidate(features, classical=True):
    det = type("Det", (), {"blob": type("B", (), {"area_m2": 100.0, "centroid_px": (1.0, 2.0)})(),
                           "change": "appeared"})()
    return Candidate(det, classical, features, None)


def test_judge_records_every_judged_candidate_when_given_a_recorder():
    record: list = []
    found = [_candidate(np.zeros(len(judge_module.verifier.FEATURES) - 2)), _candidate(None)]
    kept = judge(found, Judge(recorder=record))
    assert len(kept) == 2 and len(record) == 1
    assert len(record[0]["features"]) == len(judge_module.verifier.FEATURES)
    assert record[0]["classical"] is True and record[0]["change"] == "appeared"


def test_judge_drops_what_the_verifier_finds_below_its_threshold():
    model = judge_module.verifier.load_verifier()
    x = np.zeros(len(judge_module.verifier.FEATURES) - 2)
    found = [_candidate(x), _candidate(None)]
    assert len(judge(found, Judge(model, threshold=1.01))) == 1  # only the unjudged one
    assert len(judge(found, Judge(model, threshold=0.0))) == 2


def test_recorder_is_passed_in_not_a_module_switch(pair, tmp_path):
    record: list = []
    run_pair(*pair, tmp_path / "rec", recorder=record)
    other = run_pair(*pair, tmp_path / "plain")  # a later run without one records nothing
    assert record and all("features" in r for r in record)
    assert not hasattr(judge_module.verifier, "RECORD") and other.detections is not None


def test_outputs_get_the_permissions_of_the_users_umask(tmp_path):
    import os
    import stat

    from pipeline.io import write_text_atomic

    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "report.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def _reordered(src, dst, order, colours):
    import rasterio
    from rasterio.enums import ColorInterp

    with rasterio.open(src) as ds:
        profile, data = ds.profile, ds.read()
    profile.pop("photometric", None)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data[list(order)])
        out.colorinterp = [getattr(ColorInterp, c) for c in colours]
        out.descriptions = (None,) * len(order)
    return dst


@pytest.mark.slow
def test_blue_green_red_files_are_compared_as_red_green_blue(sample_pair, tmp_path):
    """The shadow test takes the third compared band as blue: a file storing blue first is
    read by its colour interpretation, and pairs of differently ordered files match colours."""
    import rasterio

    from pipeline import io as rio

    before, after, _ = sample_pair
    bgr = ("blue", "green", "red")
    b_bgr = _reordered(before, tmp_path / "before_bgr.tif", (2, 1, 0), bgr)
    a_bgr = _reordered(after, tmp_path / "after_bgr.tif", (2, 1, 0), bgr)
    with rasterio.open(b_bgr) as b_ds, rasterio.open(a_bgr) as a_ds, \
            rasterio.open(before) as rgb_ds:
        assert rio.matching_bands(b_ds, a_ds) == ([3, 2, 1], [3, 2, 1])
        assert rio.matching_bands(rgb_ds, a_ds) == ([1, 2, 3], [3, 2, 1])
    rgb = run_pair(before, after, tmp_path / "rgb")
    key = [(d.klass, d.change, d.blob.centroid_px) for d in rgb.detections]
    for pair in ((b_bgr, a_bgr), (before, a_bgr)):
        out = run_pair(*pair, tmp_path / pair[1].stem / pair[0].stem)
        assert [(d.klass, d.change, d.blob.centroid_px) for d in out.detections] == key
        assert out.report["radiometry"]["gains"] == rgb.report["radiometry"]["gains"]
