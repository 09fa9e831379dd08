import numpy as np
import pytest
from scipy import ndimage

from pipeline.coreg.shift import estimate_shift, window_shift


def _texture(n: int, seed: int) -> np.ndarray:
    """1/f noise with rectangles: the kind of texture phase correlation meets on an apron."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(n)
    r = np.hypot(*np.meshgrid(f, f))
    r[0, 0] = 1
    spec = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / r
    img = np.real(np.fft.ifft2(spec))
    img = (img - img.min()) / np.ptp(img)
    for _ in range(60):
        x, y = rng.integers(0, n - 40, 2)
        w, h = rng.integers(5, 40, 2)
        img[y:y + h, x:x + w] = rng.random()
    return ndimage.gaussian_filter(img, 0.7).astype(np.float32)


def _pair(seed, dx, dy, size=512, pad=64, gain=0.8, offset=0.1, noise=0.01):
    rng = np.random.default_rng(seed + 1000)
    img = _texture(size + 2 * pad, seed)
    moved = ndimage.shift(img, (dy, dx), order=3, mode="reflect")
    sl = slice(pad, pad + size)
    before = img[sl, sl] + rng.normal(0, noise, (size, size)).astype(np.float32)
    after = moved[sl, sl] * gain + offset + rng.normal(0, noise, (size, size)).astype(np.float32)
    return before, after


@pytest.mark.parametrize("seed", range(12))
def test_shift_recovered_within_tenth_pixel_despite_gain_and_noise(seed):
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(-8, 8, 2)
    before, after = _pair(seed, dx, dy)
    ex, ey, peak = window_shift(before, after)
    assert abs(ex - dx) < 0.1 and abs(ey - dy) < 0.1, (dx, dy, ex, ey)
    assert peak > 0.3


def test_integer_shift_is_exact():
    before, after = _pair(3, 5.0, -7.0, noise=0.0, gain=1.0, offset=0.0)
    ex, ey, _ = window_shift(before, after)
    assert abs(ex - 5.0) < 0.02 and abs(ey + 7.0) < 0.02


def test_consensus_rejects_a_window_pulled_by_change():
    windows = []
    for seed in range(5):
        b, a = _pair(seed, 2.25, -1.5)
        if seed == 0:  # a large changed object covering the window
            a = _texture(512, 99)
        valid = np.ones(b.shape, bool)
        windows.append(((256.0 + 512 * seed, 256.0), b[None], a[None], valid))
    shift = estimate_shift(windows)
    assert abs(shift.dx_px - 2.25) < 0.05 and abs(shift.dy_px + 1.5) < 0.05
    assert shift.n_inliers == 4 and not shift.windows[0].inlier
    assert 0.5 < shift.quality <= 1


def test_flat_windows_give_no_shift():
    flat = np.full((1, 256, 256), 7.0, np.float32)
    assert estimate_shift([((128.0, 128.0), flat, flat, np.ones((256, 256), bool))]) is None
