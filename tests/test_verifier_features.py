"""The verifier's object-level features (pipeline.detect.verifier): the planform of a mask, the object
found a little way off in the other image, its polarity against the ground and its size against
the other candidates of its blob, each on shapes with known answers."""
import cv2
import numpy as np
import pytest

from pipeline.detect.verifier import (
    BLOB_FEATURES,
    FEATURES,
    SHAPE_FEATURES,
    blob_context,
    contrast,
    found_in_other,
    shape_features,
)

RES = (0.5, 0.5)


def _aircraft(size=160, angle=0.0):
    """A 30 m fuselage with 28 m wings across it at 40 % of its length and a tail plane."""
    m = np.zeros((size, size), np.uint8)
    c = size // 2
    m[c - 3:c + 3, c - 30:c + 30] = 1          # fuselage, 30 x 3 m
    m[c - 28:c + 28, c - 10:c] = 1             # wings, 28 m span
    m[c - 10:c + 10, c + 22:c + 28] = 1        # tail plane
    if angle:
        rot = cv2.getRotationMatrix2D((c, c), angle, 1.0)
        m = cv2.warpAffine(m, rot, (size, size), flags=cv2.INTER_NEAREST)
    return m.astype(bool)


def _features(mask):
    return dict(zip(SHAPE_FEATURES, shape_features(mask, RES)))


@pytest.mark.parametrize("angle", [0.0, 33.0, 90.0])
def test_an_aircraft_planform_is_a_symmetric_cross_far_from_convex(angle):
    plane = _features(_aircraft(angle=angle))
    box = np.zeros((160, 160), bool)
    box[60:100, 50:110] = True
    rect = _features(box)
    assert plane["solidity"] < 0.5 and rect["solidity"] > 0.95
    assert plane["symmetry"] > 0.9  # mirrored about its fuselage
    # the wings make a slice several times the median one, near the middle
    assert plane["cross_major"] > 3 and plane["peak_major"] < 0.5
    assert rect["cross_major"] < 1.6 and rect["cross_minor"] < 1.6
    assert plane["log_hu1"] > rect["log_hu1"]


def test_an_l_shape_is_not_symmetric():
    m = np.zeros((120, 120), bool)
    m[20:100, 20:40] = True
    m[80:100, 20:65] = True  # arms of unequal length: no axis of symmetry
    assert _features(m)["symmetry"] < 0.7


def test_too_small_a_mask_has_zero_features():
    m = np.zeros((20, 20), bool)
    m[5, 5:8] = True
    assert shape_features(m, RES) == [0.0] * len(SHAPE_FEATURES)


def _scene(rng, offset=(0, 0), with_plane=True):
    img = rng.normal(100, 3, (200, 200)).astype(np.float32)
    if with_plane:
        plane = np.roll(_aircraft(200), offset, axis=(0, 1))
        img[plane] += 60
    return img


def test_an_aircraft_towed_a_few_metres_is_found_in_the_other_image():
    rng = np.random.default_rng(1)
    holding = _scene(rng)
    obj = _aircraft(200)
    moved = found_in_other(obj, holding, _scene(rng, offset=(6, 8)), RES)
    gone = found_in_other(obj, holding, _scene(rng, with_plane=False), RES)
    assert moved[0] > 0.9 and 0.1 < moved[1] < 0.25  # 5 m off a 30 m aircraft
    assert moved[2] < 0.6  # where it stood the other image differs
    assert gone[0] < 0.3
    flat = np.full((200, 200), 7, np.float32)
    assert found_in_other(obj, flat, holding, RES) == [0.0, 0.0, 0.0]


def test_polarity_tells_a_white_aircraft_over_a_dark_stain_from_one_that_stayed():
    rng = np.random.default_rng(2)
    obj = _aircraft(200)
    ring = cv2.dilate(obj.astype(np.uint8), np.ones((13, 13), np.uint8)).astype(bool) & ~obj
    arrived = _scene(rng)  # the aircraft, 60 levels over ground of noise 3
    stain = rng.normal(100, 3, (200, 200)).astype(np.float32)
    stain[obj] -= 60  # the dark mark of the stand where it parks
    bright, dark, flat = (contrast(img, obj, ring)[3] for img in
                          (arrived, stain, rng.normal(100, 3, (200, 200)).astype(np.float32)))
    assert bright > 0.9 and dark < -0.9  # 20 ring sigmas either way, squashed
    assert abs(flat) < 0.1
    # the other measures do not see the sign: the stain stands out as much as a white object
    assert contrast(stain, obj, ring)[1] > 10


def test_a_piece_is_weighed_against_the_largest_candidate_of_its_blob():
    # a 1200 m2 airliner grown from its blob, the blob (600 m2) and a wing cut from it (150 m2)
    whole, blob, wing = blob_context([1200.0, 600.0, 150.0])
    assert whole == [0.0, pytest.approx(np.log(3))]
    assert blob[0] == pytest.approx(np.log(0.5)) and wing[0] == pytest.approx(np.log(0.125))
    assert blob_context([80.0]) == [[0.0, 0.0]]  # alone in its blob
    assert list(FEATURES[-len(BLOB_FEATURES):]) == list(BLOB_FEATURES)  # appended last
