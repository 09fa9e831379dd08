"""The faster paths of windowed processing give exactly what the plain whole-array code gives."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from affine import Affine
from rasterio.io import MemoryFile
from rasterio.windows import Window

from pipeline import io as rio
from pipeline.change.difference import (
    LocalNoise,
    block_change_mask,
    change_mask,
    change_score,
    local_radius_px,
    mask_reach_px,
    screened_change_mask,
    shadow_change,
    smooth,
    structure_score,
    window_reach_px,
)
from pipeline.change.radiometry import fast_quantiles
from pipeline.config import DifferenceConfig
from pipeline.coreg.shift import _translate
from pipeline.detect.candidates import may_hold_blobs
from pipeline.io.readers import stripes as _stripes
from pipeline.report import pictures as report
from pipeline.testing import synth


@pytest.fixture(scope="module")
def scene():
    pair = synth.make_pair(seed=3, size_px=512, scenario="random")
    before = pair.before.astype(np.float32)
    # AFTER on BEFORE's scale, as the pipeline compares them
    after = pair.after.astype(np.float32) * np.float32(0.97) + np.float32(2.5)
    return before, after


@pytest.mark.parametrize("tolerance_px", [0, 1, 3])
@pytest.mark.parametrize("hole", [False, True])
@pytest.mark.parametrize("dense_share", [0.0, 1.0])  # whole-array envelopes always, never
def test_block_mask_equals_the_whole_array_mask(scene, tolerance_px, hole, dense_share,
                                                monkeypatch):
    from pipeline.change import difference
    monkeypatch.setattr(difference, "DENSE_SHARE", dense_share)
    before, after = scene
    valid = np.ones(before.shape[1:], bool)
    if hole:
        valid[100:180, 300:420] = False
    cfg = DifferenceConfig(tolerance_px=tolerance_px)
    sigma = np.float32([6.0, 5.5, 7.0])
    score = change_score(before, after, valid, sigma, smoothing_px=cfg.smoothing_px,
                         tolerance_px=cfg.tolerance_px)
    whole = change_mask(score, valid, 0.5, cfg, shadow=shadow_change(before, after))
    assert whole.sum() > 200  # the scene has changes to find
    np.testing.assert_array_equal(block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg), whole)


@pytest.mark.parametrize("hole", [False, True])
def test_local_noise_mask_of_a_window_equals_the_whole_array_mask(scene, hole):
    # the local unit's neighbourhood lies within the mask's reach: a window with that margin
    # gives the whole-array mask in its core
    before, after = scene
    after = after.copy()
    after[:, :, :200] += np.random.default_rng(1).normal(0, 8, after[:, :, :200].shape
                                                         ).astype(np.float32)  # noisy left part
    valid = np.ones(before.shape[1:], bool)
    if hole:
        valid[100:180, 300:420] = False
    cfg = DifferenceConfig(local_noise_m=10)
    sigma = np.float32([6.0, 5.5, 7.0])
    noise = LocalNoise((6.0, 5.5, 7.0), (2.0, 2.0, 2.0), 1.0, local_radius_px(cfg, 0.5), 0.5,
                       (0.5, 3.0))
    score = change_score(before, after, valid, sigma, smoothing_px=cfg.smoothing_px,
                         tolerance_px=cfg.tolerance_px, noise=noise)
    whole = change_mask(score, valid, 0.5, cfg, shadow=shadow_change(before, after))
    assert whole.sum() > 200
    np.testing.assert_array_equal(block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, noise=noise),
                                  whole)
    reach = mask_reach_px(cfg, 0.5)
    for r0, c0 in [(200, 150), (0, 300), (312, 312), (201, 153)]:  # cells of 2 px: odd too
        rows = slice(max(0, r0 - reach), r0 + 200 + reach)
        cols = slice(max(0, c0 - reach), c0 + 200 + reach)
        part = block_change_mask(before[:, rows, cols], after[:, rows, cols], valid[rows, cols],
                                 sigma, res_m=0.5, cfg=cfg, noise=noise, origin=(rows.start, cols.start))
        y, x = r0 - rows.start, c0 - cols.start
        np.testing.assert_array_equal(part[y:y + 200, x:x + 200], whole[r0:r0 + 200, c0:c0 + 200])


@pytest.mark.parametrize("hole", [False, True])
def test_structure_score_mask_of_a_window_equals_the_whole_array_mask(scene, hole):
    # the outlines seed the mask too: a window with the mask's reach still gives the
    # whole-array mask in its core, with the local unit on
    before, after = scene
    valid = np.ones(before.shape[1:], bool)
    if hole:
        valid[100:180, 300:420] = False
    cfg = DifferenceConfig(local_noise_m=10, threshold_sigma=8, low_threshold_sigma=6)
    sigma = np.float32([6.0, 5.5, 7.0])
    noise = LocalNoise((6.0, 5.5, 7.0), (2.0, 2.0, 2.0), 1.0, local_radius_px(cfg, 0.5), 0.5,
                       (0.5, 3.0))
    unit = 3.0
    score = change_score(before, after, valid, sigma, smoothing_px=cfg.smoothing_px,
                         tolerance_px=cfg.tolerance_px, noise=noise)
    structure = structure_score([smooth(x, cfg.smoothing_px) for x in before],
                                [smooth(x, cfg.smoothing_px) for x in after], unit,
                                cfg.tolerance_px)
    whole = change_mask(score, valid, 0.5, cfg, shadow=shadow_change(before, after),
                        structure=structure)
    # the outlines add to the mask the score alone gives
    assert whole.sum() > change_mask(score, valid, 0.5, cfg,
                                     shadow=shadow_change(before, after)).sum() + 100
    np.testing.assert_array_equal(
        block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, noise=noise, structure_unit=unit),
        whole)
    reach = mask_reach_px(cfg, 0.5)
    for r0, c0 in [(200, 150), (0, 300), (312, 312), (201, 153)]:
        rows = slice(max(0, r0 - reach), r0 + 200 + reach)
        cols = slice(max(0, c0 - reach), c0 + 200 + reach)
        part = block_change_mask(before[:, rows, cols], after[:, rows, cols], valid[rows, cols],
                                 sigma, res_m=0.5, cfg=cfg, noise=noise, origin=(rows.start, cols.start),
                                 structure_unit=unit)
        y, x = r0 - rows.start, c0 - cols.start
        np.testing.assert_array_equal(part[y:y + 200, x:x + 200], whole[r0:r0 + 200, c0:c0 + 200])


def test_block_without_change_is_empty(scene):
    before, _ = scene
    valid = np.ones(before.shape[1:], bool)
    mask = block_change_mask(before, before.copy(), valid, np.float32([6, 6, 6]), res_m=0.5,
                             cfg=DifferenceConfig())
    assert not mask.any()


@pytest.mark.parametrize("bands", [1, 3, 5])  # four uint8 bands would be RGB + alpha
@pytest.mark.parametrize("shift", [(0.3, -0.7), (2.3021, -1.6026), (-5.96, 3.03), (0.5, 0.5)])
def test_one_shift_read_matches_opencv_cubic_warp(bands, shift):
    # AfterOnGrid resamples a translation with a separable cubic: OpenCV's kernel at exact
    # positions, where warpAffine rounds them to 1/1024 px (on this noise of 255 levels a pixel,
    # 0.005 apart at most)
    rng = np.random.default_rng(7)
    src = rng.integers(0, 255, (bands, 301, 277)).astype(np.uint8)
    profile = dict(driver="GTiff", width=277, height=301, count=bands, dtype="uint8",
                   crs="EPSG:32636", transform=Affine(0.5, 0, 600000, 0, -0.5, 3900000))
    w = Window(10, 12, 250, 270)
    with MemoryFile() as mf:
        with mf.open(**profile) as dst:
            dst.write(src)
        with mf.open() as ds:
            got, valid = rio.AfterOnGrid(ds, rio.grid_of(ds), shift_px=shift).read_window(w)
    m = np.float32([[1, 0, w.col_off + shift[0]], [0, 1, w.row_off + shift[1]]])
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    ref = np.stack([cv2.warpAffine(b.astype(np.float32), m, (250, 270), flags=flags,
                                   borderMode=cv2.BORDER_REPLICATE) for b in src])
    assert valid.all()
    np.testing.assert_allclose(got, ref, atol=0.01)


@pytest.mark.parametrize("shift", [(2.3, -1.6), (-5.7, 3.2), (0.0, 0.0)])
def test_rounded_read_is_the_source_moved_by_whole_pixels(shift):
    # the level field's coarse cells are read with the shift rounded: the source's own values,
    # moved by the nearest whole pixels, invalid where the window leaves the source
    rng = np.random.default_rng(8)
    src = rng.integers(0, 255, (3, 120, 130)).astype(np.uint8)
    profile = dict(driver="GTiff", width=130, height=120, count=3, dtype="uint8",
                   crs="EPSG:32636", transform=Affine(0.5, 0, 600000, 0, -0.5, 3900000))
    w = Window(-4, 10, 100, 105)
    with MemoryFile() as mf:
        with mf.open(**profile) as dst:
            dst.write(src)
        with mf.open() as ds:
            got, valid = rio.AfterOnGrid(ds, rio.grid_of(ds), shift_px=shift).read_rounded(w)
    dx, dy = round(shift[0]), round(shift[1])
    ref = np.zeros((3, 105, 100), np.float32)
    inside = np.zeros((105, 100), bool)
    for i in range(105):
        for j in range(100):
            r, c = 10 + i + dy, -4 + j + dx
            if 0 <= r < 120 and 0 <= c < 130:
                ref[:, i, j], inside[i, j] = src[:, r, c], True
    np.testing.assert_array_equal(valid, inside)
    np.testing.assert_array_equal(got[:, inside], ref[:, inside])


def test_coarse_cells_average_the_valid_pixels():
    rng = np.random.default_rng(9)
    values = rng.uniform(0, 100, (2, 34, 50)).astype(np.float32)
    valid = rng.random((34, 50)) > 0.3
    means, share = rio.coarse_cells(values, valid, 8)
    assert means.shape == (2, 4, 6) and share.shape == (4, 6)
    for i in range(4):
        for j in range(6):
            cell = (slice(8 * i, 8 * i + 8), slice(8 * j, 8 * j + 8))
            assert share[i, j] == pytest.approx(valid[cell].mean(), abs=1e-6)
            np.testing.assert_allclose(means[:, i, j], values[(slice(None),) + cell][:, valid[cell]]
                                       .mean(axis=1), rtol=1e-5)
    all_valid = rio.coarse_cells(values, np.ones((34, 50), bool), 8)[0]
    np.testing.assert_allclose(all_valid, values[:, :32, :48].reshape(2, 4, 8, 6, 8).mean(axis=(2, 4)),
                               rtol=1e-5)


@pytest.mark.parametrize("shift", [(2.3, -1.6), (-0.4, 0.7), (25.5, -31.2), (0.0, 0.0)])
def test_separable_spline_shift_matches_scipy(shift):
    from scipy import ndimage

    img = np.random.default_rng(3).random((300, 400)).astype(np.float32) * 255
    dx, dy = shift
    pad = int(np.ceil(max(abs(dx), abs(dy)))) + 2
    ref = ndimage.shift(img, (-dy, -dx), order=3, mode="nearest")
    got = _translate(img, dx, dy)
    np.testing.assert_allclose(got[pad:-pad, pad:-pad], ref[pad:-pad, pad:-pad], atol=1e-4)


def test_spline_shift_prefilters_an_image_once_per_padding():
    img = np.random.default_rng(4).random((200, 240)).astype(np.float32) * 255
    cache = {}
    # the refinement's steps: nearby shifts share a padding (and so the coefficients)
    for dx, dy in [(2.3, -1.6), (2.41, -1.52), (2.405, -1.523), (-7.2, 0.4)]:
        got = _translate(img, dx, dy, coefficients=cache)
        np.testing.assert_array_equal(got, _translate(img, dx, dy))
    assert sorted(cache) == [16, 22]  # 12 + 2 + max(|floor(dx)|, |floor(dy)|)


@pytest.mark.parametrize("n", [1000, 400_000, 4_200_000])
def test_fast_quantiles_equal_numpy(n):
    rng = np.random.default_rng(n)
    qs = np.linspace(0.02, 0.98, 50)
    for values in (rng.random(n).astype(np.float32) * 255,
                   np.round(rng.normal(120, 30, n)).astype(np.float32),  # integer-valued ties
                   np.where(rng.random(n) < 0.7, 7, rng.random(n) * 1e4).astype(np.float32),
                   rng.standard_t(3, n)):
        for q in (qs, (0.02, 0.98), [0.5], [0.0, 1.0]):
            np.testing.assert_array_equal(fast_quantiles(values, q), np.quantile(values, q))


@pytest.mark.parametrize("size", [(63, 64), (40, 41), (512, 512), (128, 128), (10, 3)])
@pytest.mark.parametrize("bands", [1, 3, 4, 5])
def test_overview_resize_matches_band_by_band(size, bands):
    rng = np.random.default_rng(size[0] + bands)
    src = rng.integers(0, 255, (bands, 1024, 1024)).astype(np.float32) * np.float32(0.97)
    alone = np.stack([cv2.resize(b, size, interpolation=cv2.INTER_AREA).reshape(size[::-1])
                      for b in src])
    np.testing.assert_array_equal(report._area_resize(src, size), alone)


def test_stripes_hold_every_block_once_in_row_order():
    blocks = list(rio.block_windows(5000, 3000, 1024, 35))
    stripes = _stripes(blocks, 2048)
    assert len(stripes) == 3
    assert sorted((c.row_off, c.col_off) for s in stripes for c, _ in s) == \
        sorted((c.row_off, c.col_off) for c, _ in blocks)
    for stripe in stripes:
        assert [c.row_off for c, _ in stripe] == sorted(c.row_off for c, _ in stripe)


def test_pass_two_skips_only_blocks_where_no_blob_can_start():
    core, padded = Window(1024, 1024, 1024, 1024), Window(779, 779, 1514, 1514)
    assert not may_hold_blobs((core, padded), set(), 1024)
    assert not may_hold_blobs((core, padded), {(0, 0), (0, 1024), (1024, 0)}, 1024)  # above, left
    for below_right in [(1024, 1024), (1024, 2048), (2048, 1024), (2048, 2048)]:
        assert may_hold_blobs((core, padded), {below_right}, 1024)


@pytest.mark.parametrize("tolerance_px", [1, 2])
def test_score_at_pixels_is_the_same_from_neighbours_and_whole_envelopes(scene, tolerance_px,
                                                                          monkeypatch):
    # the two ways of taking the envelopes, every pixel and a scattered few (the array's
    # borders among them): the whole-array change score's values, bit for bit
    from pipeline.change import difference
    before, after = scene
    sb = [np.ascontiguousarray(smooth(x, 0.8)) for x in before]
    sa = [np.ascontiguousarray(smooth(x, 0.8)) for x in after]
    sigma = np.float32([6.0, 5.5, 7.0])
    shape = before.shape[1:]
    whole = change_score(before, after, np.ones(shape, bool), sigma, smoothing_px=0.8,
                         tolerance_px=tolerance_px).ravel()
    rng = np.random.default_rng(2)
    few = np.union1d(rng.choice(whole.size, 3000, replace=False), [0, shape[1] - 1, whole.size - 1])
    for at in [np.arange(whole.size), few]:
        got = []
        for share in [0.0, 1.0]:
            monkeypatch.setattr(difference, "DENSE_SHARE", share)
            got.append(difference._score_at(sb, sa, at, shape, sigma, tolerance_px))
        np.testing.assert_array_equal(got[0], whole[at])
        np.testing.assert_array_equal(got[1], whole[at])


def test_quiet_block_stops_before_the_local_gain_is_counted(scene, monkeypatch):
    # with a local unit no smaller than half the scene's, a difference of 2 units everywhere
    # cannot seed (5): the block is empty without the gain; a real change still is counted
    from pipeline.change import difference
    before, _ = scene
    valid = np.ones(before.shape[1:], bool)
    rng = np.random.default_rng(5)
    quiet = before + rng.uniform(-2, 2, before.shape).astype(np.float32)
    cfg = DifferenceConfig(local_noise_m=10)
    noise = LocalNoise((2.0,) * 3, (0.5,) * 3, 1.0, local_radius_px(cfg, 0.5), 0.5, (0.5, 3.0))
    sigma = np.float32([2.0] * 3)
    counted = []
    real = difference._cell_gain
    monkeypatch.setattr(difference, "_cell_gain", lambda *a: counted.append(1) or real(*a))
    assert not block_change_mask(before, quiet, valid, sigma, res_m=0.5, cfg=cfg, noise=noise).any()
    assert not counted
    changed = quiet.copy()
    changed[:, 200:240, 200:260] += 40
    mask = block_change_mask(before, changed, valid, sigma, res_m=0.5, cfg=cfg, noise=noise)
    assert counted and mask[205:235, 205:255].mean() > 0.9


@pytest.mark.parametrize("hole", [False, True])
@pytest.mark.parametrize("local, unit", [(False, None), (True, None), (True, 3.0)])
def test_screened_mask_equals_the_whole_array_mask(scene, hole, local, unit):
    # the cascade's screen: the mask computed only in windows around the 2 m cells that may
    # hold a seed gives the whole-array mask, and looks at part of the scene only
    before, after = scene
    # the synthetic scene is dense with changes (the screen would keep it whole): only a
    # quarter of it changes here
    after = before.copy()
    after[:, 150:350, 150:350] = scene[1][:, 150:350, 150:350]
    valid = np.ones(before.shape[1:], bool)
    if hole:
        valid[100:180, 300:420] = False
    cfg = DifferenceConfig(local_noise_m=10 if local else 0, screen=0.75)
    sigma = np.float32([6.0, 5.5, 7.0])
    noise = (LocalNoise((6.0, 5.5, 7.0), (2.0, 2.0, 2.0), 1.0, local_radius_px(cfg, 0.5), 0.5,
                        (0.5, 3.0)) if local else None)
    score = change_score(before, after, valid, sigma, smoothing_px=cfg.smoothing_px,
                         tolerance_px=cfg.tolerance_px, noise=noise)
    structure = None if unit is None else structure_score(
        [smooth(x, cfg.smoothing_px) for x in before], [smooth(x, cfg.smoothing_px) for x in after],
        unit, cfg.tolerance_px)
    whole = change_mask(score, valid, 0.5, cfg, shadow=shadow_change(before, after),
                        structure=structure)
    assert whole.sum() > 200
    screened = screened_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg,
                                    noise=noise, structure_unit=unit)
    np.testing.assert_array_equal(screened.mask, whole)
    assert 0 < screened.looked_share < 0.6


def test_screen_skips_a_block_of_noise_and_keeps_a_faint_object():
    rng = np.random.default_rng(4)
    before = rng.normal(100, 2, (3, 400, 400)).astype(np.float32)
    after = before + rng.normal(0, 2, before.shape).astype(np.float32)
    valid = np.ones((400, 400), bool)
    cfg = DifferenceConfig(local_noise_m=0, screen=0.75)
    sigma = np.float32([2.0, 2.0, 2.0])
    quiet = screened_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg)
    assert quiet.looked_share == 0 and not quiet.mask.any()
    # a 3 x 6 m object just above the seed threshold (5 sigmas), off the cells' lattice
    after[:, 201:213, 151:157] += 5.5 * 2 * np.sqrt(2)
    full = screened_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, screened=False)
    faint = screened_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg)
    assert full.mask[201:213, 151:157].mean() > 0.5
    np.testing.assert_array_equal(faint.mask, full.mask)
    assert 0 < faint.looked_share < 0.2


@pytest.mark.parametrize("hole", [False, True])
@pytest.mark.parametrize("local, unit", [(False, None), (True, None), (True, 3.0)])
def test_the_core_mask_alone_equals_the_whole_array_mask_there(scene, hole, local, unit):
    # a block's core read with the mask's reach as margin: the per-pixel work runs only on the
    # core grown by window_reach_px, and the core's mask is the whole array's
    before, after = scene
    valid = np.ones(before.shape[1:], bool)
    if hole:
        valid[60:140, 300:420] = False
    cfg = DifferenceConfig(local_noise_m=10 if local else 0)
    sigma = np.float32([6.0, 5.5, 7.0])
    noise = (LocalNoise((6.0, 5.5, 7.0), (2.0, 2.0, 2.0), 1.0, local_radius_px(cfg, 0.5), 0.5,
                        (0.5, 3.0)) if local else None)
    whole = screened_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, noise=noise,
                                 structure_unit=unit, screened=False).mask
    reach = window_reach_px(cfg, 0.5)
    core = (slice(reach + 40, before.shape[1] - reach - 30), slice(reach + 25, 380))
    assert whole[core].sum() > 200
    part = screened_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, noise=noise,
                                structure_unit=unit, screened=False, inner=core)
    np.testing.assert_array_equal(part.mask[core], whole[core])
    assert not part.mask[:core[0].start - reach].any() and part.looked_share == 1.0
    # the work stopped short of the array: a pixel beyond the core's window changes nothing
    far = after.copy()
    far[:, :core[0].start - reach, :] += 200
    again = screened_change_mask(before, far, valid, sigma, res_m=0.5, cfg=cfg, noise=noise,
                                 structure_unit=unit, screened=False, inner=core)
    if not local:  # (the local gain is counted over the whole array)
        np.testing.assert_array_equal(again.mask, part.mask)
