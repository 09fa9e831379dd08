"""Co-registration on the ground plane: pairs whose tall structures lean differently (parallax)
are registered on the ground, and refused only when no ground estimate holds."""
import math

import cv2
import numpy as np
import pytest
from affine import Affine
from conftest import shared_dataset, write_tif
from scipy import ndimage

from pipeline.config import Config
from pipeline.coreg.ground import GROUND_METHOD
from pipeline.coreg.register import register
from pipeline.errors import RegistrationError
from pipeline.io.raster import wrap_plain_image
from pipeline.io.scene import open_scene
from pipeline.report.model import Coregistration, coregistration_section

TRANSFORM = Affine(0.5, 0, 500000, 0, -0.5, 4000000)
GROUND_PX = (2.3, -1.6)


def _texture(n: int, seed: int, smooth_px: float = 0.7) -> np.ndarray:
    """1/f noise in [0, 1]: pavement, or a roof's clutter."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(n)
    r = np.hypot(*np.meshgrid(f, f))
    r[0, 0] = 1
    img = np.real(np.fft.ifft2((rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) / r))
    return ndimage.gaussian_filter((img - img.min()) / np.ptp(img), smooth_px)


def _parallax_pair(size: int, ground_px, lean_px, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An apron (low-contrast pavement, joints every 10 m, painted lines) moved by
    ``ground_px``, under a terminal of bright roofs along the top half whose tops move by
    ``ground_px + lean_px`` (seen from another angle): the roofs' edges dominate the gradients
    of every large window that reaches them."""
    rng = np.random.default_rng(seed)
    pad = 48
    n = size + 2 * pad
    ground = 60 + 60 * _texture(n, seed)
    ground[::20, :] += 12
    ground[:, ::20] += 12
    for _ in range(6):
        r, c = rng.integers(pad, n - pad, 2)
        ground[r:r + 3, :] += 40
        ground[:, c:c + 3] += 40
    before = ground.copy()
    after = ndimage.shift(ground, (ground_px[1], ground_px[0]), order=3, mode="reflect")
    for k in range(16):
        h, w = rng.integers(60, 160, 2)
        y = int(rng.integers(pad, pad + size // 2 - h // 2))
        x = int(rng.integers(pad, n - pad - w))
        roof = 150 + 100 * _texture(int(max(h, w)) + 16, seed + 7 + k, 1.0)[:h, :w]
        roof[::12, :] -= 60
        roof[:, ::12] -= 60
        before[y:y + h, x:x + w] = roof
        yy, xx = round(y + ground_px[1] + lean_px[1]), round(x + ground_px[0] + lean_px[0])
        after[yy:yy + h, xx:xx + w] = roof
    noise = np.random.default_rng(seed + 1)
    sl = slice(pad, pad + size)
    return tuple(np.clip(img[sl, sl] + noise.normal(0, 1, (size, size)), 0, 255).astype("uint8")
                 for img in (before, after))


GROUND_FIRST = Config().with_overrides({"coregistration": {"ground_first": True}})


def _register(tmp_path, before, after, config=None, **kwargs):
    b = write_tif(tmp_path / "before.tif", before, transform=TRANSFORM)
    a = write_tif(tmp_path / "after.tif", after, transform=TRANSFORM)
    config = config or Config()
    with open_scene(b, a, config) as scene:
        registration = register(scene, config, **kwargs)
        return registration, scene.grid


@pytest.fixture(scope="module")
def parallax_registration(tmp_path_factory):
    """The registration of a pair whose terminal leans by (6, 4) px more than its ground."""
    before, after = _parallax_pair(1024, GROUND_PX, (6.0, 4.0))
    # the windows' consensus is strong here (on the roofs): only ground_first overrules it
    return _register(tmp_path_factory.mktemp("parallax"), before, after, GROUND_FIRST)


def test_leaning_terminal_registered_on_the_ground_within_half_a_pixel(parallax_registration):
    registration, _ = parallax_registration
    shift = registration.shift
    assert math.hypot(shift.dx_px - GROUND_PX[0], shift.dy_px - GROUND_PX[1]) < 0.5, shift
    # every large window reaches a roof: their consensus lies on the roofs, the ground's does not
    assert shift.method == GROUND_METHOD
    assert "off the ground plane" in registration.reason
    ground = registration.ground
    assert ground.holds and ground.n_ground >= 40 and ground.n_ground < ground.n_measured


def test_report_says_how_the_pair_was_registered_and_why(parallax_registration):
    registration, grid = parallax_registration
    section = Coregistration.model_validate(coregistration_section(
        registration.shift, grid, False, reason=registration.reason, ground=registration.ground))
    assert section.method == GROUND_METHOD and section.applied
    assert "ground plane holds" in section.reason
    g = section.ground
    assert g.holds and g.used + g.rejected == g.measured <= g.windows
    assert section.n_inliers == g.used and section.n_windows >= g.measured
    assert abs(section.shift_x_px - GROUND_PX[0]) < 0.5


def test_consensus_kept_when_the_ground_agrees(tmp_path):
    rng = np.random.default_rng(5)
    img = 40 + 160 * _texture(1088, 5)
    img[::20, :] += 10
    before = img[32:-32, 32:-32]
    after = ndimage.shift(img, (-1.25, 3.5), order=3, mode="reflect")[32:-32, 32:-32]
    before, after = (np.clip(x + rng.normal(0, 1, x.shape), 0, 255).astype("uint8")
                     for x in (before, after))
    registration, _ = _register(tmp_path, before, after, GROUND_FIRST)
    assert registration.shift.method != GROUND_METHOD and registration.reason == ""
    assert registration.ground is not None and registration.ground.holds
    # by default a consensus that passes the gate is used as it is, the ground not measured
    (tmp_path / "default").mkdir()
    default, _ = _register(tmp_path / "default", before, after)
    assert default.ground is None and default.shift == registration.shift
    assert abs(registration.shift.dx_px - 3.5) < 0.1 and abs(registration.shift.dy_px + 1.25) < 0.1


def test_drifting_ground_gives_its_shift_at_the_overlap_centre(tmp_path):
    """Relief or another viewing angle: AFTER's ground drifts by 4 px across the scene (0.4 %
    scale in x); one shift fits only at the centre, and that is the one to give."""
    size = 1024
    img = 40 + 160 * _texture(size, 9)
    img[::20, :] += 10
    img[:, ::20] += 10
    cols, rows = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    dx = 1.5 + 0.004 * (cols - size / 2)
    after = cv2.remap(img.astype(np.float32), cols - dx, rows + 0.8, cv2.INTER_CUBIC,
                      borderMode=cv2.BORDER_REFLECT)
    registration, _ = _register(tmp_path, img.astype("uint8"), np.clip(after, 0, 255).astype("uint8"))
    shift = registration.shift
    assert abs(shift.dx_px - 1.5) < 0.5 and abs(shift.dy_px + 0.8) < 0.5, shift


def test_unrelated_images_are_refused_with_the_ground_planes_reason(tmp_path):
    a = (40 + 160 * _texture(768, 1)).astype("uint8")
    b = (40 + 160 * _texture(768, 2)).astype("uint8")
    with pytest.raises(RegistrationError, match="co-registration failed.*ground plane: only"):
        _register(tmp_path, a, b)


def test_unrelated_images_are_not_registered_by_the_ground_when_allowed_to_go_on(tmp_path):
    a = (40 + 160 * _texture(768, 3)).astype("uint8")
    b = (40 + 160 * _texture(768, 4)).astype("uint8")
    with pytest.warns(UserWarning, match="going on unregistered"):
        registration, _ = _register(tmp_path, a, b, allow_unregistered=True)
    assert registration.shift is None or registration.shift.dx_px == 0.0
    assert "ground plane" in registration.reason and not registration.ground.holds


# -- real imagery: G8, tall terminals seen from other angles --------------------------------------

#: G8 pairs the windows' consensus refused (quality 0.06-0.14 with a simulated georeference
#: error): (BEFORE, AFTER, the ground's translation of AFTER's frame (tx, ty), its uncertainty).
#: The translations are an independent reference (SIFT matches and intensity template matching
#: voted by area, an affine model at the overlap's centre: benchmarks/coregistration.py's
#: GroundReference); the ground itself departs from one translation by about 1.5 px there.
G8_REFUSED_BEFORE = [("7c2da441", "babb0ef2", (21.623, 0.729), 1.0),
                     ("7c2da441", "fc1ab8ce", (5.261, 4.02), 1.5)]


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("before_id, after_id, translation, tolerance_px", G8_REFUSED_BEFORE)
def test_g8_pair_refused_before_is_registered_on_the_ground(tmp_path, before_id, after_id,
                                                             translation, tolerance_px):
    images = shared_dataset("airbus-aircraft-sample") / "images"
    error = (-2.104, 0.192)  # a georeference error, as the benchmark draws them
    before = wrap_plain_image(next(images.glob(f"{before_id}*.jpg")), tmp_path / "b.tif", gsd_m=0.5)
    after = wrap_plain_image(next(images.glob(f"{after_id}*.jpg")), tmp_path / "a.tif", gsd_m=0.5,
                             offset_px=(-translation[0] + error[0], -translation[1] + error[1]))
    config = Config().with_overrides({"input": {"nodata": 0}})
    with open_scene(before, after, config) as scene:
        registration = register(scene, config)
    shift = registration.shift
    assert shift.method == GROUND_METHOD, registration.reason
    assert math.hypot(shift.dx_px - error[0], shift.dy_px - error[1]) < tolerance_px, shift
    assert registration.ground.n_ground >= 25
