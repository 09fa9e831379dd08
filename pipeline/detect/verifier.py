"""Optional learned verifier: how likely an aircraft-sized candidate is an aircraft that came or
went, from measurements of the pair itself.

It judges ``aircraft``-category detections only; launchers are never touched. With
``verifier.enabled`` the blobs whose mean change score (times the local noise gain) reaches
``verifier.min_sigma`` instead of ``difference.blob_sigma`` are classified too, the aircraft
among them are made even where a classical rule would drop them
(:func:`pipeline.detect.classify.classical_rule`: the rule is one of the features), and the verifier
keeps those whose probability reaches the model's threshold (chosen by the training command on
held-out airports, not tuned by hand) or ``verifier.threshold`` when given.

Its features measure the candidate's size, score, contrast and texture against the ground
around it, the classical rule it breaks, the planform of the object as the mask and as the
image that holds it show it (:func:`shape_features`: a cross of wings over a fuselage,
symmetric, far from convex), and whether the other image shows the same object a little way off
(:func:`found_in_other`: an aircraft towed a few metres, no change to the annotations), whether
the object is brighter or darker than its ground in each image (a white aircraft over its
stand's dark oil stain is no aircraft that stayed), and for a candidate measured as an image
shows the object around its blob (``split.grow_m``), how much that added and how much of it
stands out in the other image too.

The model is a small gradient-boosted tree ensemble (trained with scikit-learn's
HistGradientBoostingClassifier) stored as JSON text beside this module (``verifier_model.json``):
feature names, each tree's nodes and leaf values, and the threshold.
Inference needs numpy only and never downloads anything. The training command is
``benchmarks/verifier.py`` (dump, train, loao).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..change.difference import robust_sigma
from ..errors import ConfigError
from .blobs import Blob, pixel_corners
from .classify import Detection, object_pixels, shadow_share, stands_out, static_share
from .fusion import DETECTOR_FEATURES

MODEL_PATH = Path(__file__).with_name("verifier_model.json")

# the planform of a mask (:func:`shape_features`): an aircraft is a cross (wings across a
# fuselage), symmetric about its fuselage, far from convex; a vehicle, a roof or a patch of
# asphalt is none of these
SHAPE_FEATURES = ("solidity", "symmetry", "cross_major", "peak_major", "cross_minor",
                  "peak_minor", "log_hu1")

# a candidate weighed against the others made from the same blob (:func:`blob_context`): last
BLOB_FEATURES = ("log_area_of_largest", "log_n_in_blob")
FEATURES = (
    "log_blob_length", "log_blob_width", "log_blob_area", "blob_fill",
    "log_obj_length", "log_obj_width", "log_obj_area", "obj_elongation", "obj_fill",
    "obj_share", "log_mean_score", "log_max_score", "log_gain", "log_gain_score",
    "class_fit", "direction_conf", "log_evidence_hold", "log_evidence_other",
    "shadow_share", "hold_contrast", "other_contrast", "hold_contrast_sigma",
    "other_contrast_sigma", "hold_texture_ratio", "other_texture_ratio", "hold_ring_texture",
    "ring_static_share", "strong_share", "large",
    "rule_static", "rule_shadow", "rule_vehicle_group", "rule_compact", "rule_noclass",
    *(f"{m}_{f}" for m in ("obj", "sil") for f in SHAPE_FEATURES),
    "match_other", "match_shift", "match_same", "grown", "log_grown_ratio", "grown_other_share",
    "hold_signed", "other_signed", "signed_agreement",
    *DETECTOR_FEATURES,
    *BLOB_FEATURES,
)
# the classical rules (:func:`pipeline.detect.classify.classical_rule`) a candidate breaks, as features
RULES = ("static", "shadow", "vehicle-group", "compact", "noclass")


def _lum(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=0)


def shape_features(mask: np.ndarray, res_m: tuple[float, float]) -> list[float]:
    """The planform of a boolean mask, in :data:`SHAPE_FEATURES` order.

    - ``solidity``: its area over its convex hull's (pixel corners in the hull);
    - ``symmetry``: the share of its pixels whose mirror image about its major or minor
      principal axis is in it too (the better of the two axes);
    - ``cross_major`` / ``cross_minor``: along each principal axis, the largest slice of it
      (slices 1 m thick, or a 24th of its extent when larger) over the median slice: wings
      across a fuselage make a peak, a rectangle none; ``peak_*``: how far that largest slice
      lies from the centre, in half extents (0 at the centre, 1 at an end);
    - ``log_hu1``: the log of its first Hu moment (its spread about the centroid over its area
      squared: larger for a cross than for a compact shape of the same area).
    """
    ys, xs = np.nonzero(mask)
    if xs.size < 6:
        return [0.0] * len(SHAPE_FEATURES)
    rx, ry = res_m
    pts = np.column_stack([xs * rx, ys * ry]).astype(np.float64)
    centre = pts.mean(axis=0)
    d = pts - centre
    _, vecs = np.linalg.eigh(d.T @ d / len(d))
    minor, major = vecs[:, 0], vecs[:, 1]
    u, v = d @ major, d @ minor
    hull = cv2.convexHull(pixel_corners(np.column_stack([xs, ys])).astype(np.float32))
    solidity = xs.size / max(float(cv2.contourArea(hull)), 1.0)

    def mirrored_share(a, b):  # mirror about the axis along ``a``: b -> -b
        q = centre + np.outer(a[0], a[1]) - np.outer(b[0], b[1])
        c = np.rint(q[:, 0] / rx).astype(np.intp)
        r = np.rint(q[:, 1] / ry).astype(np.intp)
        ok = (c >= 0) & (r >= 0) & (c < mask.shape[1]) & (r < mask.shape[0])
        hit = np.zeros(c.size, bool)
        hit[ok] = mask[r[ok], c[ok]]
        return float(hit.mean())
    symmetry = max(mirrored_share((u, major), (v, minor)), mirrored_share((v, minor), (u, major)))

    def cross(t):
        extent = float(t.max() - t.min())
        step = max(1.0, extent / 24)
        counts = np.bincount(((t - t.min()) / step).astype(np.intp))
        counts = counts[counts > 0]
        k = int(np.argmax(counts))
        mid = (len(counts) - 1) / 2
        return (float(counts[k]) / max(float(np.median(counts)), 1.0),
                abs(k - mid) / max(mid, 1.0))
    cross_major, peak_major = cross(u)
    cross_minor, peak_minor = cross(v)
    area = xs.size * rx * ry
    hu1 = float((u ** 2 + v ** 2).sum() * rx * ry) / max(area * area, 1e-9)
    return [solidity, symmetry, cross_major, peak_major, cross_minor, peak_minor,
            math.log(max(hu1, 1e-6))]


def found_in_other(obj: np.ndarray, holding: np.ndarray, other: np.ndarray,
                   res_m: tuple[float, float], *, max_shift_m: float = 15.0) -> list[float]:
    """Whether the other image shows the same object a little way off (an aircraft towed a few
    metres, which the annotations count as no change): the holding image's patch over the
    object (its box and 1 m around) sought in the other image within half the object's length
    (at most ``max_shift_m``) by normalised cross-correlation.

    Returns the best correlation, its shift in object lengths, and the correlation where the
    object is (no shift); zeros for a flat patch.
    """
    ys, xs = np.nonzero(obj)
    if xs.size < 6:
        return [0.0, 0.0, 0.0]
    res = min(res_m)
    m = max(1, round(1.0 / res))
    h, w = obj.shape
    r0, r1 = max(int(ys.min()) - m, 0), min(int(ys.max()) + 1 + m, h)
    c0, c1 = max(int(xs.min()) - m, 0), min(int(xs.max()) + 1 + m, w)
    length_m = max(r1 - r0, c1 - c0) * res
    s = round(min(0.5 * length_m, max_shift_m) / res)
    sr0, sr1, sc0, sc1 = max(r0 - s, 0), min(r1 + s, h), max(c0 - s, 0), min(c1 + s, w)
    t = np.ascontiguousarray(holding[r0:r1, c0:c1], np.float32)
    if float(t.std()) < 1e-3:
        return [0.0, 0.0, 0.0]
    ncc = cv2.matchTemplate(np.ascontiguousarray(other[sr0:sr1, sc0:sc1], np.float32), t,
                            cv2.TM_CCOEFF_NORMED)
    ncc = np.nan_to_num(ncc, nan=0.0)
    k = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    dy, dx = k[0] - (r0 - sr0), k[1] - (c0 - sc0)
    return [float(ncc[k]), float(math.hypot(dx, dy) * res / max(length_m, 1e-6)),
            float(ncc[r0 - sr0, c0 - sc0])]


def silhouette(inside: np.ndarray, obj: np.ndarray, lum: np.ndarray, ring: np.ndarray,
               res_m: tuple[float, float], *, reach_m: float = 2.0) -> np.ndarray:
    """The object as the image that holds it shows it, whatever the change mask kept: pixels
    within ``reach_m`` of the blob that stand out from the ring's ground
    (:func:`pipeline.detect.classify.stands_out`, and by 5 % of its level), the pieces of them that
    touch ``obj``; ``obj`` when none does."""
    if ring.sum() < 8:
        return obj
    reach = max(1, round(reach_m / min(res_m)))
    near = cv2.dilate(inside.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    out = (stands_out(lum, ring, relative=0.05) & (near > 0)).astype(np.uint8)
    out = cv2.morphologyEx(out, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(out, connectivity=8)
    keep = np.unique(labels[obj & (labels > 0)])
    if keep.size == 0:
        return obj
    return np.isin(labels, keep)


def contrast(lum: np.ndarray, obj: np.ndarray, ring: np.ndarray
             ) -> tuple[float, float, float, float]:
    """How an object stands out of the ground around it in one image's luminance.

    Returns the mean absolute difference of the object's pixels (``obj``) from the ring's
    (``ring``) median, relative to that level and in the ring's robust sigmas; the object's
    texture (standard deviation) over the ring's; and its polarity: the signed mean difference
    in ring sigmas, squashed into (-1, 1) by tanh(x / 10). A white aircraft over the dark stain
    of its stand is bright in one image and dark in the other; an aircraft that stayed is bright
    in both.
    """
    g = lum[ring]
    level = float(np.median(g))
    spread = max(robust_sigma(g), 1e-3 * max(abs(level), 1.0), 1e-6)
    d = float(np.mean(np.abs(lum[obj] - level)))
    signed = float(np.mean(lum[obj] - level))
    tex = float(np.std(lum[obj])) / max(float(np.std(g)), 1e-6)
    return d / max(abs(level), 1.0), d / spread, tex, float(np.tanh(signed / spread / 10))


def blob_context(areas_m2: list[float]) -> list[list[float]]:
    """The last features (:data:`BLOB_FEATURES`) of the aircraft candidates made from one blob
    (the blob, its pieces, the objects grown from it), given their areas: each one's area over
    the largest's (log) and how many they are (log). A piece beside a larger candidate of the
    same blob is rarely the object itself."""
    top = max(areas_m2)
    return [[math.log(max(a, 1e-3) / top), math.log(len(areas_m2))] for a in areas_m2]


def candidate_features(raw: Blob, det: Detection, before: np.ndarray, after: np.ndarray,
                       inside: np.ndarray, ring: np.ndarray, *, score: np.ndarray, gain: float,
                       res_m: tuple[float, float], blob_sigma: float,
                       rule: str | None = None, shown_from: np.ndarray | None = None
                       ) -> np.ndarray:
    """The verifier's features of one classified candidate, in :data:`FEATURES` order, less the
    detector's (:data:`~pipeline.detect.fusion.DETECTOR_FEATURES`, added by
    :func:`pipeline.detect.fusion.with_sightings`) and the last (:data:`BLOB_FEATURES`), which
    :func:`blob_context` adds once all the candidates of its blob are made.

    ``raw`` is the blob as found (its score filled in), ``det`` its detection (the object
    measured without shadow and fringe); the chips, masks and score are those given to
    :func:`pipeline.detect.classify.classify_blob`; ``gain`` is the local noise gain; ``rule`` the
    classical rule that would drop it (:data:`RULES`), if any; ``shown_from`` the blob's
    pixels when ``inside`` is the object as an image shows it around them (``split.grow_m``):
    the object is then ``inside`` without its shadow, not cut where the score falls.
    """
    holding, other = (after, before) if det.change == "appeared" else (before, after)
    obj = object_pixels(inside, holding, other, score if shown_from is None else None)
    if not obj.any():
        obj = inside
    px_m2 = res_m[0] * res_m[1]
    b = det.blob
    obj_area = float(obj.sum()) * px_m2
    hl, ol = _lum(holding), _lum(other)
    has_ring = bool(ring.sum() >= 8)

    hc, hcs, ht, hp = contrast(hl, obj, ring) if has_ring else (0.0, 0.0, 1.0, 0.0)
    oc, ocs, ot, op = contrast(ol, obj, ring) if has_ring else (0.0, 0.0, 1.0, 0.0)
    ring_tex = 0.0
    static = 0.0
    if has_ring:
        lvl = float(np.median(hl[ring]))
        ring_tex = float(np.std(hl[ring])) / max(abs(lvl), 1.0)
        static = static_share(holding, other, ring)
    grown = [0.0, 0.0, 0.0]  # grown, log_grown_ratio, grown_other_share
    if shown_from is not None:
        grown = [1.0, math.log(float(inside.sum()) / max(float(shown_from.sum()), 1.0)),
                 float(stands_out(ol, ring, relative=0.05)[inside].mean()) if has_ring else 0.0]
    shadow = shadow_share(before, after, inside, score)
    strong = float((score[inside] >= blob_sigma).mean())
    lg = math.log
    x = [
        lg(raw.length_m), lg(raw.width_m), lg(max(raw.area_m2, 1e-3)),
        raw.area_m2 / max(raw.length_m * raw.width_m, 1e-6),
        lg(b.length_m), lg(b.width_m), lg(max(obj_area, 1e-3)),
        b.length_m / max(b.width_m, 1e-6), obj_area / max(b.length_m * b.width_m, 1e-6),
        float(obj.sum()) / max(float(inside.sum()), 1.0),
        lg(max(raw.mean_score, 1e-3)), lg(max(raw.max_score, 1e-3)), lg(gain),
        lg(max(raw.mean_score * gain, 1e-3)),
        det.class_fit, det.direction_conf,
        lg(max(max(det.evidence_before, det.evidence_after), 1e-3)),
        lg(max(min(det.evidence_before, det.evidence_after), 1e-3)),
        shadow, hc, oc, lg(max(hcs, 1e-3)), lg(max(ocs, 1e-3)), lg(max(ht, 1e-3)),
        lg(max(ot, 1e-3)), ring_tex, static, strong, float(raw.length_m >= 30.0),
        *(float(rule == r) for r in RULES),
        *shape_features(obj, res_m),
        *shape_features(silhouette(inside, obj, hl, ring, res_m), res_m),
        *found_in_other(obj, hl, ol, res_m),
        *grown,
        hp, op, hp * op,
    ]
    return np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


class Verifier:
    """Gradient-boosted trees over :data:`FEATURES`, read from their JSON text.

    P(aircraft change) = sigmoid(baseline + the sum of each tree's leaf value); a row goes to a
    node's left child when its feature is at most the node's threshold.
    """

    def __init__(self, model: dict):
        if model.get("kind") != "trees":
            raise ValueError("verifier model: unknown kind (retrain with benchmarks/verifier.py)")
        names = list(model["features"])
        # this version's features, or all but the detector's (a model trained without them)
        if names not in (list(FEATURES), [f for f in FEATURES if f not in DETECTOR_FEATURES]):
            raise ValueError("verifier model: its features are not this version's "
                             "(retrain with benchmarks/verifier.py)")
        #: the columns of a :data:`FEATURES` vector the model reads (a model trained without
        #: the detector's evidence reads none of :data:`DETECTOR_FEATURES`)
        self.columns = [FEATURES.index(f) for f in names]
        self.uses_detector = any(f in names for f in DETECTOR_FEATURES)
        self.baseline = float(model["baseline"])
        self.threshold = float(model["threshold"])
        self.trees = [(np.asarray(t["feature"], np.intp), np.asarray(t["threshold"], np.float64),
                       np.asarray(t["left"], np.intp), np.asarray(t["right"], np.intp),
                       np.asarray(t["leaf"], bool), np.asarray(t["value"], np.float64))
                      for t in model["trees"]]
        # the same trees as lists: one row walks them faster in Python than numpy can
        self._walk = [tuple(a.tolist() for a in tree) for tree in self.trees]

    @classmethod
    def from_file(cls, path: str | Path) -> "Verifier":
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def probability(self, x: np.ndarray) -> np.ndarray | float:
        """P(aircraft change) of one :data:`FEATURES` vector (N,) or of rows (K, N)."""
        rows = np.atleast_2d(np.asarray(x, dtype=np.float64))[:, self.columns]
        if len(rows) == 1:
            row = rows[0].tolist()
            raw1 = self.baseline
            for feature, threshold, left, right, leaf, value in self._walk:
                node = 0
                while not leaf[node]:
                    node = left[node] if row[feature[node]] <= threshold[node] else right[node]
                raw1 += value[node]
            p1 = 1.0 / (1.0 + math.exp(-raw1))
            return p1 if np.ndim(x) == 1 else np.array([p1])
        k = np.arange(len(rows))
        raw = np.full(len(rows), self.baseline)
        for feature, threshold, left, right, leaf, value in self.trees:
            node = np.zeros(len(rows), np.intp)
            while not leaf[node].all():
                go_left = rows[k, feature[node]] <= threshold[node]
                node = np.where(leaf[node], node, np.where(go_left, left[node], right[node]))
            raw += value[node]
        p = 1.0 / (1.0 + np.exp(-raw))
        return float(p[0]) if np.ndim(x) == 1 else p


@lru_cache(maxsize=4)
def load_verifier(path: str | None = None) -> Verifier:
    """The verifier of ``path``, or the one shipped with the package (read once).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, is not JSON, or is no model of this version's
        features (``verifier.model`` names it).
    """
    source = Path(path or MODEL_PATH)
    try:
        return Verifier.from_file(source)
    except OSError as err:
        raise ConfigError(f"{source}: cannot read verifier model ({err.strerror or err})",
                          path=source, key="verifier.model") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: verifier model is not valid JSON ({err.msg}, "
                          f"line {err.lineno})", path=source, key="verifier.model") from None
    except (ValueError, KeyError, TypeError) as err:
        why = str(err) if isinstance(err, ValueError) else f"missing or malformed {err}"
        raise ConfigError(f"{source}: {why.removeprefix('verifier model: ')}", path=source,
                          key="verifier.model") from None
