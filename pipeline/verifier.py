"""Optional learned verifier: how likely an aircraft-sized candidate is an aircraft that came or
went, from measurements of the pair itself.

It judges ``aircraft``-category detections only; launchers are never touched. With
``verifier.enabled`` the blobs whose mean change score (times the local noise gain) reaches
``verifier.min_sigma`` instead of ``difference.blob_sigma`` are classified too, the aircraft
among them are made even where a classical rule would drop them
(:func:`pipeline.classify.classical_rule`: the rule is one of the features), and the verifier
keeps those whose probability reaches the model's threshold (chosen by the training command on
held-out airports, not tuned by hand) or ``verifier.threshold`` when given.

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

import numpy as np

from .blobs import Blob
from .classify import Detection, object_pixels, shadow_share, static_share
from .difference import robust_sigma

MODEL_PATH = Path(__file__).with_name("verifier_model.json")

# When a list, _detect_block appends one record per aircraft candidate (features, place,
# whether the classical path keeps it) and keeps every candidate: the training dump.
RECORD: list | None = None

FEATURES = (
    "log_blob_length", "log_blob_width", "log_blob_area", "blob_fill",
    "log_obj_length", "log_obj_width", "log_obj_area", "obj_elongation", "obj_fill",
    "obj_share", "log_mean_score", "log_max_score", "log_gain", "log_gain_score",
    "class_fit", "direction_conf", "log_evidence_hold", "log_evidence_other",
    "shadow_share", "hold_contrast", "other_contrast", "hold_contrast_sigma",
    "other_contrast_sigma", "hold_texture_ratio", "other_texture_ratio", "hold_ring_texture",
    "ring_static_share", "strong_share", "large",
    "rule_static", "rule_shadow", "rule_vehicle_group", "rule_compact", "rule_noclass",
)
# the classical rules (:func:`pipeline.classify.classical_rule`) a candidate breaks, as features
RULES = ("static", "shadow", "vehicle-group", "compact", "noclass")


def _lum(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=0)


def candidate_features(raw: Blob, det: Detection, before: np.ndarray, after: np.ndarray,
                       inside: np.ndarray, ring: np.ndarray, score: np.ndarray, gain: float,
                       res_m: tuple[float, float], blob_sigma: float,
                       rule: str | None = None) -> np.ndarray:
    """The verifier's features of one classified candidate, in :data:`FEATURES` order.

    ``raw`` is the blob as found (its score filled in), ``det`` its detection (the object
    measured without shadow and fringe); the chips, masks and score are those given to
    :func:`pipeline.classify.classify_blob`; ``gain`` is the local noise gain; ``rule`` the
    classical rule that would drop it (:data:`RULES`), if any.
    """
    holding, other = (after, before) if det.change == "appeared" else (before, after)
    obj = object_pixels(inside, holding, other, score)
    if not obj.any():
        obj = inside
    px_m2 = res_m[0] * res_m[1]
    b = det.blob
    obj_area = float(obj.sum()) * px_m2
    hl, ol = _lum(holding), _lum(other)
    has_ring = bool(ring.sum() >= 8)

    def contrast(lum):
        if not has_ring:
            return 0.0, 0.0, 1.0
        g = lum[ring]
        level = float(np.median(g))
        spread = max(robust_sigma(g), 1e-3 * max(abs(level), 1.0), 1e-6)
        d = float(np.mean(np.abs(lum[obj] - level)))
        tex = float(np.std(lum[obj])) / max(float(np.std(g)), 1e-6)
        return d / max(abs(level), 1.0), d / spread, tex

    hc, hcs, ht = contrast(hl)
    oc, ocs, ot = contrast(ol)
    ring_tex = 0.0
    static = 0.0
    if has_ring:
        lvl = float(np.median(hl[ring]))
        ring_tex = float(np.std(hl[ring])) / max(abs(lvl), 1.0)
        static = static_share(holding, other, ring)
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
        if list(model["features"]) != list(FEATURES):
            raise ValueError("verifier model: its features are not this version's "
                             "(retrain with benchmarks/verifier.py)")
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
        """P(aircraft change) of one feature vector (N,) or of rows (K, N)."""
        rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
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
    """The verifier of ``path``, or the one shipped with the package (read once)."""
    return Verifier.from_file(path or MODEL_PATH)
