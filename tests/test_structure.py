"""The structure score: an object's outline is found where a change of level all over the
scene (season, sensor) hides its body from the score."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.change.difference import (
    block_change_mask,
    gradient_magnitude,
    robust_sigma,
    smooth,
    smoothed_difference,
)
from pipeline.config import DifferenceConfig


def _scene(seed: int, size: int = 256):
    """Ground whose surfaces changed level unevenly between the dates (a smooth field of about
    14 DN), with an aircraft-like cross 50 DN brighter than it in BEFORE only."""
    rng = np.random.default_rng(seed)

    def field(sd):  # smooth random relief of about ``sd``
        f = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 12)
        return f * np.float32(sd / f.std())

    ground = 150 + field(20)
    before = np.stack([ground] * 3) + rng.normal(0, 1.5, (3, size, size)).astype(np.float32)
    after = np.stack([ground + field(14)] * 3) + rng.normal(0, 1.5, (3, size, size)
                                                            ).astype(np.float32)
    plane = np.zeros((size, size), bool)
    plane[100:164, 124:134] = True  # fuselage 32 x 5 m at 0.5 m
    plane[122:132, 104:154] = True  # wings 25 m
    plane[154:160, 116:142] = True  # tail
    before[:, plane] += 50
    return before, after, plane


def _units(before, after, cfg):
    valid = np.ones(before.shape[1:], bool)
    sigma = np.float32([robust_sigma(d.ravel())
                        for d in smoothed_difference(before, after, cfg.smoothing_px)])
    sb = [smooth(x, cfg.smoothing_px) for x in before]
    sa = [smooth(x, cfg.smoothing_px) for x in after]
    g = (gradient_magnitude(sa) - gradient_magnitude(sb)).ravel()
    return valid, sigma, cfg.structure_unit * robust_sigma(g)


def test_an_outline_is_found_where_a_change_of_level_hides_the_body():
    before, after, plane = _scene(seed=1)
    cfg = DifferenceConfig(tolerance_px=1, local_noise_m=0)
    valid, sigma, unit = _units(before, after, cfg)
    # the uneven change of level makes the scene's unit large: the body is under 5 units
    assert 50 / sigma.max() < cfg.threshold_sigma
    assert not block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg).any()
    mask = block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, structure_unit=unit)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    assert n == 2  # one blob, the plane's, and nothing on the uneven ground
    x, y, w, h, _ = stats[1]
    ys, xs = np.nonzero(plane)
    assert abs(x - xs.min()) <= 3 and abs(y - ys.min()) <= 3
    assert abs(w - (np.ptp(xs) + 1)) <= 6 and abs(h - (np.ptp(ys) + 1)) <= 6
    assert (mask & plane).sum() > 0.8 * plane.sum()  # the closing fills the outline's body


def test_without_the_object_the_uneven_ground_gives_no_outline():
    before, after, plane = _scene(seed=1)
    before[:, plane] -= 50  # no object: the change of level alone
    cfg = DifferenceConfig(tolerance_px=1, local_noise_m=0)
    valid, sigma, unit = _units(before, after, cfg)
    assert not block_change_mask(before, after, valid, sigma, res_m=0.5, cfg=cfg, structure_unit=unit).any()
