"""Evaluation: detections against truth, as precision, recall and F1 per category and change.

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
