"""Evaluation: detections against truth, as precision, recall and F1 per category and change,
and as a confusion table of the classes of the pairs matched (:func:`class_confusion`).

Features are matched one to one by the distance between their centroids on the ground (metres),
within each (category, change) group, by an optimal assignment (Hungarian method). Truth features
marked ``"ignore": true`` are regions that cannot be judged: never truth, and they excuse the
unmatched detections on or near them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from pyproj import Geod
from scipy.optimize import linear_sum_assignment
from shapely.geometry import shape

from .errors import InputError, UnreadableInputError

_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class Score:
    """Matches in one group: true positives, false positives, false negatives."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def load_features(path: str | Path) -> list[dict]:
    """Features of a GeoJSON FeatureCollection file.

    Raises
    ------
    UnreadableInputError
        The file is missing or cannot be read.
    InputError
        It is not a GeoJSON FeatureCollection.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnreadableInputError(f"{path}: file not found", path=path) from None
    except OSError as err:
        raise UnreadableInputError(f"{path}: cannot be read ({err.strerror or err})",
                                   path=path) from None
    except ValueError as err:
        raise InputError(f"{path}: not a GeoJSON file ({err})", path=path) from None
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        raise InputError(f"{path}: not a GeoJSON FeatureCollection", path=path)
    return data.get("features", [])


def centroid_lonlat(feature: dict) -> tuple[float, float]:
    c = shape(feature["geometry"]).centroid
    return c.x, c.y


def _length_m(feature: dict) -> float:
    try:
        return float(feature.get("properties", {}).get("length_m") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def match(truth: list[dict], detections: list[dict], max_distance_m: float = 10.0
          ) -> tuple[Score, list[tuple[int, int]]]:
    """One-to-one matching of two lists of features by centroid distance (metres).

    A pair may match when its centroids lie within ``max_distance_m`` or within a quarter of the
    truth object's length, whichever is larger (the centre of a 70 m transport is less sharply
    defined than that of a 10 m launcher).
    """
    if not truth or not detections:
        return Score(0, len(detections), len(truth)), []
    t = np.array([centroid_lonlat(f) for f in truth])
    d = np.array([centroid_lonlat(f) for f in detections])
    cost = np.empty((len(t), len(d)))
    for i, (lon, lat) in enumerate(t):
        _, _, dist = _GEOD.inv(np.full(len(d), lon), np.full(len(d), lat), d[:, 0], d[:, 1])
        cost[i] = dist
    limit = np.array([max(max_distance_m, 0.25 * _length_m(f)) for f in truth])[:, None]
    allowed = cost <= limit
    rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e9))
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
    tp = len(pairs)
    return Score(tp, len(detections) - tp, len(truth) - tp), pairs


def is_ignore(feature: dict) -> bool:
    """Whether a truth feature is an ignore region (``"ignore": true`` in its properties)."""
    return (feature.get("properties") or {}).get("ignore") is True


def excused(detections: list[dict], pairs: list[tuple[int, int]], regions: list[dict],
            margin_m: float = 5.0) -> list[int]:
    """Indexes of the unmatched detections whose footprint lies within ``margin_m`` of a region.

    ``pairs`` are the (truth, detection) matches from :func:`match`; ``regions`` the ignore
    regions (lon/lat polygons). Distances are measured on a local equirectangular plane around
    each region, which is exact to a fraction of a percent over a scene.
    """
    if not regions:
        return []
    matched = {j for _, j in pairs}
    planes = []
    for region in regions:
        geom = shape(region["geometry"])
        origin = np.array([geom.centroid.x, geom.centroid.y])
        scale = np.array([math.cos(math.radians(origin[1])) * 111_320.0, 110_574.0])

        def to_m(lonlat: np.ndarray, origin=origin, scale=scale) -> np.ndarray:
            return (lonlat - origin) * scale

        planes.append((to_m, shapely.transform(geom, to_m)))
    out = []
    for j, det in enumerate(detections):
        if j in matched:
            continue
        geom = shape(det["geometry"])
        if any(shapely.transform(geom, to_m).distance(region) <= margin_m
               for to_m, region in planes):
            out.append(j)
    return out


def evaluate(truth: list[dict], detections: list[dict], max_distance_m: float = 10.0, *,
             ignore_margin_m: float = 5.0) -> dict[tuple[str, str], Score]:
    """Scores per (category, change) group present in either list, and ``("all", "all")``.

    The overall score counts a detection as right only with the right category and change.
    Truth features marked ``"ignore": true`` are not truth; a detection that matches nothing and
    lies within ``ignore_margin_m`` of one is not counted (neither right nor wrong).
    """
    def key(f):
        p = f.get("properties", {})
        return p.get("category", "?"), p.get("change", "?")

    regions = [f for f in truth if is_ignore(f)]
    truth = [f for f in truth if not is_ignore(f)]
    groups = sorted({key(f) for f in truth} | {key(f) for f in detections})
    out = {}
    total = Score(0, 0, 0)
    for g in groups:
        found = [f for f in detections if key(f) == g]
        s, pairs = match([f for f in truth if key(f) == g], found, max_distance_m)
        s = Score(s.tp, s.fp - len(excused(found, pairs, regions, ignore_margin_m)), s.fn)
        out[g] = s
        total = Score(total.tp + s.tp, total.fp + s.fp, total.fn + s.fn)
    out[("all", "all")] = total
    return out


def format_table(scores: dict[tuple[str, str], Score]) -> str:
    lines = [f"{'category':<12} {'change':<12} {'truth':>5} {'found':>5} {'tp':>4} "
             f"{'precision':>9} {'recall':>7} {'F1':>6}"]
    for (cat, change), s in scores.items():
        lines.append(f"{cat:<12} {change:<12} {s.tp + s.fn:>5} {s.tp + s.fp:>5} {s.tp:>4} "
                     f"{s.precision:>9.3f} {s.recall:>7.3f} {s.f1:>6.3f}")
    return "\n".join(lines)


#: the class of a feature whose properties name none (truth built from boxes of any aircraft)
NO_CLASS = "(none)"


@dataclass(frozen=True)
class ClassConfusion:
    """Classes of the truth/detection pairs :func:`class_confusion` matched, and the rest.

    ``pairs`` counts matched pairs by (truth class, detected class); ``missed`` the truth
    features no detection matched, by class; ``unmatched`` the detections that matched no truth
    (those excused by an ignore region left out), by class. Precision and recall of a class are
    those of the classification alone, over the matched pairs: a detection counts once it is
    found, and the table says which class it was given. Both are None for a class no matched
    pair gives them a count for.
    """

    pairs: dict[tuple[str, str], int]
    missed: dict[str, int]
    unmatched: dict[str, int]

    def __add__(self, other: ClassConfusion) -> ClassConfusion:
        """The tables of two scenes summed (match each scene on its own, then add)."""
        def added(a: dict, b: dict) -> dict:
            return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(a.keys() | b.keys())}
        return ClassConfusion(added(self.pairs, other.pairs), added(self.missed, other.missed),
                              added(self.unmatched, other.unmatched))

    @property
    def classes(self) -> list[str]:
        """Every class named by a truth or a detection, sorted."""
        return sorted({c for pair in self.pairs for c in pair} | set(self.missed)
                      | set(self.unmatched))

    def count(self, truth_class: str, detected_class: str) -> int:
        return self.pairs.get((truth_class, detected_class), 0)

    def truth_matched(self, klass: str) -> int:
        """Matched pairs whose truth is ``klass``."""
        return sum(n for (t, _), n in self.pairs.items() if t == klass)

    def detected_matched(self, klass: str) -> int:
        """Matched pairs whose detection was given ``klass``."""
        return sum(n for (_, d), n in self.pairs.items() if d == klass)

    def precision(self, klass: str) -> float | None:
        """Of the matched detections given ``klass``, the share whose truth is ``klass``;
        None when no matched detection was given it."""
        given = self.detected_matched(klass)
        return self.count(klass, klass) / given if given else None

    def recall(self, klass: str) -> float | None:
        """Of the matched truth features of ``klass``, the share detected as ``klass``; None
        when none was matched."""
        held = self.truth_matched(klass)
        return self.count(klass, klass) / held if held else None

    def as_dict(self) -> dict:
        """A JSON-ready form: the matched pairs as a list, and per-class figures."""
        return {
            "pairs": [{"truth": t, "detected": d, "count": n}
                      for (t, d), n in sorted(self.pairs.items())],
            "classes": {c: {"truth_matched": self.truth_matched(c),
                            "detected_matched": self.detected_matched(c),
                            "right": self.count(c, c), "missed": self.missed.get(c, 0),
                            "unmatched": self.unmatched.get(c, 0),
                            "precision": _rounded(self.precision(c)),
                            "recall": _rounded(self.recall(c))} for c in self.classes},
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _ratio(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def feature_class(feature: dict) -> str:
    """A feature's ``class`` property, or :data:`NO_CLASS`."""
    return str((feature.get("properties") or {}).get("class") or NO_CLASS)


def class_confusion(truth: list[dict], detections: list[dict], max_distance_m: float = 10.0,
                    *, ignore_margin_m: float = 5.0) -> ClassConfusion:
    """Which class each truth object was detected as: a confusion table of classes.

    Truth and detections are matched as :func:`evaluate` matches them (centroids one to one
    within ``max_distance_m``, or a quarter of the truth object's length), within each change
    but across categories and classes: a launcher found as a helicopter is a pair of the table,
    where :func:`evaluate` counts a miss and a false detection.

    Parameters
    ----------
    truth, detections : list of dict
        GeoJSON features in lon/lat with ``class`` and ``change`` properties
        (``detections.geojson``'s schema). Truth features marked ``"ignore": true`` are no
        truth; unmatched detections within ``ignore_margin_m`` metres of one are not counted.
    max_distance_m : float
        Largest centroid distance of a match, metres.

    Returns
    -------
    ClassConfusion
    """
    regions = [f for f in truth if is_ignore(f)]
    truth = [f for f in truth if not is_ignore(f)]

    def change(f):
        return (f.get("properties") or {}).get("change", "?")

    pairs: dict[tuple[str, str], int] = {}
    missed: dict[str, int] = {}
    unmatched: dict[str, int] = {}
    for ch in sorted({change(f) for f in truth} | {change(f) for f in detections}):
        t = [f for f in truth if change(f) == ch]
        d = [f for f in detections if change(f) == ch]
        _, matched = match(t, d, max_distance_m)
        for i, j in matched:
            key = (feature_class(t[i]), feature_class(d[j]))
            pairs[key] = pairs.get(key, 0) + 1
        found = {i for i, _ in matched}
        for i, f in enumerate(t):
            if i not in found:
                missed[feature_class(f)] = missed.get(feature_class(f), 0) + 1
        spared = {j for _, j in matched} | set(excused(d, matched, regions, ignore_margin_m))
        for j, f in enumerate(d):
            if j not in spared:
                unmatched[feature_class(f)] = unmatched.get(feature_class(f), 0) + 1
    return ClassConfusion(pairs, missed, unmatched)


def format_confusion(confusion: ClassConfusion) -> str:
    """The confusion table as text: a row per truth class, a column per detected class (the
    matched pairs), the missed truth at the end of each row; then precision and recall of
    each class over the matched pairs, and its unmatched detections."""
    classes = confusion.classes
    if not classes:
        return "classes: no truth and no detections"
    w = max(16, *(len(c) for c in classes)) + 1
    cols = [c for c in classes if any(d == c for _, d in confusion.pairs)]
    corner = "truth \\ detected"
    lines = ["classes of matched pairs: rows truth, columns detected",
             f"{corner:<{w}}" + "".join(f"{c:>{w}}" for c in cols) + f"{'missed':>8}"]
    for t in classes:
        if not any(tc == t for tc, _ in confusion.pairs) and not confusion.missed.get(t):
            continue
        lines.append(f"{t:<{w}}" + "".join(f"{confusion.count(t, d):>{w}}" for d in cols)
                     + f"{confusion.missed.get(t, 0):>8}")
    lines += ["", f"{'class':<{w}} {'truth':>5} {'given':>5} {'right':>5} {'precision':>9} "
              f"{'recall':>7} {'unmatched':>9}"]
    for c in classes:
        lines.append(f"{c:<{w}} {confusion.truth_matched(c):>5} "
                     f"{confusion.detected_matched(c):>5} {confusion.count(c, c):>5} "
                     f"{_ratio(confusion.precision(c), 9)} {_ratio(confusion.recall(c), 7)} "
                     f"{confusion.unmatched.get(c, 0):>9}")
    return "\n".join(lines)


def scores_as_dict(scores: dict[tuple[str, str], Score], confusion: ClassConfusion) -> dict:
    """Both tables of ``detect-changes-eval`` in a JSON-ready form: ``scores`` (one entry per
    category and change, ``all``/``all`` last) and ``classes`` (:meth:`ClassConfusion.as_dict`)."""
    return {
        "scores": [{"category": cat, "change": ch, "truth": s.tp + s.fn, "found": s.tp + s.fp,
                    "tp": s.tp, "fp": s.fp, "fn": s.fn, "precision": round(s.precision, 4),
                    "recall": round(s.recall, 4), "f1": round(s.f1, 4)}
                   for (cat, ch), s in scores.items()],
        "classes": confusion.as_dict(),
    }
