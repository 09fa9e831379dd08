"""The local noise unit: each pixel's score is judged against the noise of its neighbourhood."""
from __future__ import annotations

import numpy as np

from pipeline.change.difference import (
    LocalNoise,
    block_change_mask,
    local_gain_map,
    local_radius_px,
    noise_level,
)
from pipeline.config import DifferenceConfig


def _ground(seed: int, noisy_sd: float, clean_sd: float, size: int = 240):
    """Three bands of flat ground, AFTER = BEFORE + noise: ``noisy_sd`` on the left half
    (fields whose season changed), ``clean_sd`` on the right (concrete)."""
    rng = np.random.default_rng(seed)
    before = np.full((3, size, size), 120, np.float32)
    sd = np.where(np.arange(size) < size // 2, noisy_sd, clean_sd).astype(np.float32)
    after = before + rng.normal(0, 1, before.shape).astype(np.float32) * sd
    return before, after


def _noise(sigma: float, ref: float, radius_px: int = 20) -> LocalNoise:
    return LocalNoise((sigma,) * 3, (0.5,) * 3, ref, radius_px, 0.5, (0.5, 3.0))


def test_gain_follows_the_noise_of_the_neighbourhood():
    before, after = _ground(0, noisy_sd=8.0, clean_sd=2.0)
    valid = np.ones(before.shape[1:], bool)
    sb, sa = list(before), list(after)
    sigma = 4.0  # the scene's: between the two
    e = np.sqrt(noise_level(sb, sa, (sigma,) * 3))
    gain = local_gain_map(sb, sa, valid, _noise(sigma, float(np.median(e))))
    left, right = float(np.median(gain[:, :90])), float(np.median(gain[:, 150:]))
    assert left > 1 > right
    assert 3.6 < left / right < 4.4  # the two halves' noise, 8 and 2
    assert np.all((gain >= 0.5) & (gain <= 3.0))


def test_gain_is_robust_to_the_changes_it_judges():
    before, after = _ground(1, noisy_sd=3.0, clean_sd=3.0)
    after[:, 100:130, 100:140] += 60  # an aircraft: a twelfth of its neighbourhood
    valid = np.ones(before.shape[1:], bool)
    sb, sa = list(before), list(after)
    e = np.sqrt(noise_level(sb, sa, (3.0,) * 3))
    gain = local_gain_map(sb, sa, valid, _noise(3.0, float(np.median(e[:, :60])), 60))
    assert float(gain[115, 120]) < 1.2


def test_faint_object_on_clean_ground_is_found_against_its_local_noise():
    # the scene's unit is set by the noisy fields; the object is 3 of those units, 12 of the
    # clean ground's, and stands out only against the clean ground's own noise
    before, after = _ground(2, noisy_sd=8.0, clean_sd=1.0)
    after[:, 110:130, 170:200] += 30
    valid = np.ones(before.shape[1:], bool)
    sigma = np.float32([10.0] * 3)
    cfg = DifferenceConfig(tolerance_px=1, local_noise_m=10)
    sb, sa = list(before), list(after)
    e = np.sqrt(noise_level(sb, sa, (10.0,) * 3))
    noise = _noise(10.0, float(np.median(e)), local_radius_px(cfg, 0.5))
    global_mask = block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg)
    local_mask = block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, noise=noise)
    assert not global_mask[110:130, 170:200].any()
    assert local_mask[110:130, 170:200].mean() > 0.8
    assert not local_mask[:, :120].any()  # the noisy fields stay quiet: their unit grew


def test_gain_is_the_same_up_to_the_scene_edges():
    # uniform noise at 0.6 of the scene's level: every cell, corners and edges included (whose
    # squares hold a quarter to a half of a full one), gets about 0.6, on odd origins too
    rng = np.random.default_rng(4)
    sb = [np.zeros((300, 300), np.float32) for _ in range(3)]
    sa = [rng.normal(0, 0.6, (300, 300)).astype(np.float32) for _ in range(3)]
    valid = np.ones((300, 300), bool)
    ln = LocalNoise((1.0,) * 3, (0.1,) * 3, 1.0, 80, 0.5, (0.5, 3.0))
    ref = float(np.median(np.sqrt(noise_level(sb, sa, (1.0,) * 3))))
    for origin in [(0, 0), (3, 5), (1021, 7)]:
        gain = local_gain_map(sb, sa, valid, ln, origin) * np.float32(1.0 / ref)
        assert gain.shape == (300, 300)
        assert np.all(np.abs(gain - 1) < 0.06), (origin, gain.min(), gain.max())
