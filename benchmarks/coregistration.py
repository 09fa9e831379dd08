"""Co-registration accuracy and time: synthetic shifts, the AROSICS pair, the Airbus controls,
and every overlapping pair of the Airbus airports with a simulated georeference error.

    python benchmarks/coregistration.py            # 16 synthetic 2048 px pairs + real data
    python benchmarks/coregistration.py --quick    # 6 synthetic pairs
    python benchmarks/coregistration.py --airports # the 104 airport pairs (+ unrelated controls)
    python benchmarks/coregistration.py --airports --groups G8 --limit 5

Synthetic pairs carry changes (objects arriving and leaving), moving shadows, haze, a gain
change and noise; shifts are integer and sub-pixel, up to +/-20 px. Errors are the distance
between the estimated and the applied shift, in pixels.

Airport pairs (``airport_pairs.csv``): image_a is BEFORE, image_b is AFTER, placed by the true
translation plus a seeded georeference error of up to ``--max-error-px`` in each axis (every
third pair a whole number of pixels); the truth is that error. The stage runs as a run has it
(:func:`~pipeline.coreg.register.register`, its gate included). The true translation is an
independent ground reference (:class:`GroundReference`: SIFT matches and intensity templates
voted by area, an affine model at the overlap's centre; whole pixels for crops of one
acquisition), not the homography's translation: on partial overlaps its scale terms throw it by
up to 80 px (column h_miss); ``--place homography`` places AFTER by it instead (the truth then
holds what it misses). Between dates the ground itself drifts across the frame (column trend)
and tall structures lean: where the reference's votes are split ("split reference": fewer than
half agree with its model, or a trend over 3 px) errors of a pixel or two say little, and
``al3`` (the share of the reference's votes within 3 px of the estimate, against ``r_al3``, the
reference's own) says how much of the scene the estimate aligns. Unrelated controls pair
images of two airports; each must be refused. The first run computes the references (about
20 minutes) into ``benchmarks/.cache/coregistration``; later runs take about 4 minutes.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import Config
from pipeline.coreg.register import matching_windows, measure_shift, register
from pipeline.errors import RegistrationError
from pipeline.io.raster import wrap_plain_image
from pipeline.io.scene import open_scene
from pipeline.run import coregister_pair
from pipeline.testing import synth

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AIRBUS = DATA / "airbus-aircraft-sample"
GSD_M = 0.5
CACHE = Path(__file__).resolve().parent / ".cache" / "coregistration"


def _config(**input_):
    return Config().with_overrides({"input": input_})


def synthetic(n: int, size: int) -> None:
    rng = np.random.default_rng(2026)
    errors, times = [], []
    print(f"synthetic, {size} x {size} px, with changes:")
    print(f"{'case':>4} {'difficulty':>10} {'true dx':>8} {'true dy':>8} {'est dx':>8} {'est dy':>8} "
          f"{'error':>6} {'quality':>7} {'time s':>6}  method")
    for k in range(n):
        if k % 4 == 0:
            shift = tuple(float(v) for v in rng.integers(-20, 21, 2))
        else:
            shift = tuple(float(v) for v in np.round(rng.uniform(-20, 20, 2), 3))
        difficulty = ("easy", "medium", "hard")[k % 3]
        pair = synth.make_pair(seed=100 + k, size_px=size, shift_px=shift, scenario="random",
                               difficulty=difficulty)
        with tempfile.TemporaryDirectory() as tmp:
            paths = synth.write_pair(pair, tmp)
            t = time.perf_counter()
            with open_scene(paths["before"], paths["after"], Config()) as scene:
                est = register(scene, Config()).shift  # the stage as a run has it, gate included
            times.append(time.perf_counter() - t)
        err = float(np.hypot(est.dx_px - shift[0], est.dy_px - shift[1]))
        errors.append(err)
        print(f"{k:>4} {difficulty:>10} {shift[0]:>8.3f} {shift[1]:>8.3f} {est.dx_px:>8.3f} "
              f"{est.dy_px:>8.3f} {err:>6.3f} {est.quality:>7.2f} {times[-1]:>6.2f}  {est.method}",
              flush=True)
    e = np.array(errors)
    print(f"error px: median {np.median(e):.3f}, 95th percentile {np.percentile(e, 95):.3f}, "
          f"max {e.max():.3f}; time per pair: median {np.median(times):.2f} s\n")


def real() -> None:
    aro = DATA / "arosics-s2-inter1"
    if aro.is_dir():
        t = time.perf_counter()
        est, overlap = coregister_pair(next(aro.glob("ref_*.jp2")), next(aro.glob("tgt_*.jp2")),
                                       _config(nodata=0))
        dt = time.perf_counter() - t
        print(f"AROSICS INTER1 (ref = BEFORE, tgt = AFTER): shift ({est.dx_px:+.3f}, {est.dy_px:+.3f}) px,"
              f" AROSICS (+0.720, -1.890): difference ({est.dx_px - 0.72:+.3f}, {est.dy_px + 1.89:+.3f});"
              f" quality {est.quality:.2f}, {est.n_inliers}/{len(est.windows)} windows agree,"
              f" overlap {overlap:.3f}, {dt:.2f} s")
    else:
        print(f"AROSICS pair absent ({aro})")
    air = AIRBUS / "images"
    if air.is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            b = wrap_plain_image(next(air.glob("b3c7c22d*.jpg")), tmp / "g5b.tif", gsd_m=GSD_M)
            a = wrap_plain_image(next(air.glob("fc8f9dc5*.jpg")), tmp / "g5a.tif", gsd_m=GSD_M)
            est, _ = coregister_pair(b, a, _config(nodata=0))
            w = np.array([[x.dx_px, x.dy_px] for x in est.windows if x.inlier])
            print(f"Airbus G5 re-cut control: shift ({est.dx_px:+.3f}, {est.dy_px:+.3f}) px "
                  f"(SOURCE.md: about (-3.49, -12.33)); inlier windows {len(w)}/{len(est.windows)},"
                  f" their spread (std) ({w[:, 0].std():.3f}, {w[:, 1].std():.3f}) px, "
                  f"quality {est.quality:.2f}")
            b = wrap_plain_image(next(air.glob("e9021b38*.jpg")), tmp / "g8b.tif", gsd_m=GSD_M)
            a = wrap_plain_image(next(air.glob("ef92f434*.jpg")), tmp / "g8a.tif", gsd_m=GSD_M,
                                 offset_px=(512, -768))
            est, overlap = coregister_pair(b, a, _config(nodata=0))
            print(f"Airbus G8 overlapping crops, true offset applied: residual "
                  f"({est.dx_px:+.4f}, {est.dy_px:+.4f}) px, overlap {overlap:.3f}")
    else:
        print(f"Airbus images absent ({air})")


# -- the airport pairs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class AirportPair:
    """One row of ``airport_pairs.csv``: image_a (BEFORE), image_b (AFTER) and how they lie."""

    group: str
    before: Path
    after: Path
    overlap: float
    same_acquisition: bool
    h_a_to_b: np.ndarray  # (3, 3): a pixel (x, y, 1) of image_a onto image_b

    @property
    def translation_px(self) -> tuple[float, float]:
        """The homography's translation (tx, ty): ``b[y + ty, x + tx] ~ a[y, x]``."""
        return float(self.h_a_to_b[0, 2]), float(self.h_a_to_b[1, 2])

    def overlap_centre_px(self, size_px: int = 2560) -> np.ndarray:
        """(x, y) of the centre of the overlap in image_a (the frames as the translation puts
        them)."""
        tx, ty = self.translation_px
        return np.array([(max(0.0, -tx) + min(float(size_px), size_px - tx)) / 2,
                         (max(0.0, -ty) + min(float(size_px), size_px - ty)) / 2])

    def overlap_centre_displacement_px(self) -> np.ndarray:
        """The homography's displacement (dx, dy) at the centre of the overlap in image_a:
        where its points were, so less thrown by its scale terms than its translation."""
        x, y = self.overlap_centre_px()
        u, v, w = self.h_a_to_b @ np.array([x, y, 1.0])
        return np.array([u / w - x, v / w - y])


class GroundReference:
    """An independent estimate of the ground's displacement between two images, by other
    means than the pipeline's (SIFT features and intensity template matching, not phase
    correlation of gradients), voted by area; cached in ``CACHE``.

    Votes: each 256 px cell of image_a gives the mode of its SIFT matches' displacements
    (Lowe 2004; three matches or more within 1 px), and each 96 px template on a 128 px lattice
    its best normalised cross-correlation (0.5 or more) in image_b: a terminal's roof gives
    many SIFT matches in a few cells, the ground a few in many. An affine model of the
    displacement is fitted to the votes by RANSAC (1.5 px), since between dates the ground's
    displacement drifts across the frame (relief, viewing geometry); the reference is that
    model at the centre of the overlap, the mean displacement of the ground there, and
    ``trend_px`` how far the model departs from it at the overlap's corners.
    """

    def __init__(self, folder: Path = CACHE):
        self.folder = folder
        self.path = folder / "ground_reference.json"
        self.known = json.loads(self.path.read_text()) if self.path.exists() else {}
        self._features: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        self._sift = None

    def __call__(self, pair: AirportPair) -> dict:
        key = f"{pair.before.name}>{pair.after.name}"
        if key not in self.known:
            self.known[key] = self._measure(pair)
            self.folder.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.known, indent=1))
        return self.known[key]

    def _keypoints(self, path: Path):
        if path not in self._features:
            self._sift = self._sift or cv2.SIFT_create(nfeatures=20000)
            grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            kp, des = self._sift.detectAndCompute(grey, None)
            self._features = {path: (np.float32([k.pt for k in kp]), des),
                              **dict(list(self._features.items())[-3:])}
        return self._features[path]

    def matches(self, pair: AirportPair) -> tuple[np.ndarray, np.ndarray]:
        """(positions in image_a, displacements onto image_b), (N, 2) each: SIFT matches
        passing the ratio test, within 80 px of the homography's displacement."""
        path = self.folder / "matches" / f"{pair.before.name[:8]}_{pair.after.name[:8]}.npz"
        if path.exists():
            with np.load(path) as z:
                return z["at"], z["d"]
        pa, da = self._keypoints(pair.before)
        pb, db = self._keypoints(pair.after)
        knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
        good = [m for m, n in (x for x in knn if len(x) == 2) if m.distance < 0.8 * n.distance]
        at = pa[[m.queryIdx for m in good]]
        d = pb[[m.trainIdx for m in good]] - at
        near = np.hypot(*(d - pair.overlap_centre_displacement_px()).T) < 80
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, at=at[near], d=d[near])
        return at[near], d[near]

    def votes(self, pair: AirportPair) -> np.ndarray:
        """The displacements (N, 2) the reference was voted from (one a cell or template)."""
        path = self.folder / "votes" / f"{pair.before.name[:8]}_{pair.after.name[:8]}.npz"
        if not path.exists():
            self.known.pop(f"{pair.before.name}>{pair.after.name}", None)
        self(pair)
        with np.load(path) as z:
            return z["d"]

    def template_votes(self, pair: AirportPair, *, template_px: int = 96, step_px: int = 128,
                       search_px: int = 32, min_ncc: float = 0.5):
        """(positions, displacements) of the templates of image_a that match image_b."""
        a = cv2.imread(str(pair.before), cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(str(pair.after), cv2.IMREAD_GRAYSCALE)
        prior = np.round(pair.overlap_centre_displacement_px()).astype(int)
        half, where, shifts = template_px // 2, [], []
        for y in range(half, a.shape[0] - half, step_px):
            for x in range(half, a.shape[1] - half, step_px):
                bx, by = x + prior[0] - half - search_px, y + prior[1] - half - search_px
                side = template_px + 2 * search_px
                if bx < 0 or by < 0 or bx + side > b.shape[1] or by + side > b.shape[0]:
                    continue
                tpl = a[y - half:y + half, x - half:x + half]
                if tpl.std() < 2:
                    continue
                ncc = cv2.matchTemplate(b[by:by + side, bx:bx + side], tpl, cv2.TM_CCOEFF_NORMED)
                _, peak, _, (i, j) = cv2.minMaxLoc(ncc)
                if peak < min_ncc or not (0 < i < ncc.shape[1] - 1 and 0 < j < ncc.shape[0] - 1):
                    continue
                sub = [(c[0] - c[2]) / (2 * (c[0] - 2 * c[1] + c[2]))
                       for c in (ncc[j, i - 1:i + 2], ncc[j - 1:j + 2, i])]
                where.append((x, y))
                shifts.append((prior[0] + i - search_px + sub[0], prior[1] + j - search_px + sub[1]))
        return np.array(where, np.float32).reshape(-1, 2), np.array(shifts, np.float32).reshape(-1, 2)

    def _measure(self, pair: AirportPair, cell_px: int = 256) -> dict:
        at, d = self.matches(pair)
        where, modes = [], []
        cells = (at // cell_px).astype(int)
        for cell in {tuple(c) for c in cells}:
            inside = (cells == cell).all(axis=1)
            dd, pp = d[inside], at[inside]
            support = (np.hypot(*(dd[:, None] - dd[None]).T) < 1.0).sum(axis=0)
            if support.max() < 3:
                continue
            near = np.hypot(*(dd - dd[int(np.argmax(support))]).T) < 1.0
            modes.append(np.median(dd[near], axis=0))
            where.append(pp[near].mean(axis=0))
        t_where, t_shifts = self.template_votes(pair)
        n_sift = len(modes)
        where = np.vstack([np.array(where, np.float32).reshape(-1, 2), t_where])
        modes = np.vstack([np.array(modes, np.float32).reshape(-1, 2), t_shifts])
        votes = self.folder / "votes" / f"{pair.before.name[:8]}_{pair.after.name[:8]}.npz"
        votes.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(votes, where=where, d=modes)
        if len(modes) < 3:
            return {"dx_px": None, "dy_px": None, "cells": 0, "of_cells": len(modes)}
        model, inliers = cv2.estimateAffine2D(where, where + modes, method=cv2.RANSAC,
                                              ransacReprojThreshold=1.5, maxIters=5000,
                                              confidence=0.999, refineIters=10)
        inliers = inliers.ravel() > 0 if model is not None else np.zeros(len(modes), bool)
        if model is None or inliers.sum() < 6:  # too few cells for a slope: one translation
            support = (np.hypot(*(modes[:, None] - modes[None]).T) < 1.5).sum(axis=0)
            inliers = np.hypot(*(modes - modes[int(np.argmax(support))]).T) < 1.5
            model = np.hstack([np.eye(2), np.median(modes[inliers], axis=0)[:, None]])

        def displacement(x, y):
            return model @ np.array([x, y, 1.0]) - np.array([x, y])

        centre = pair.overlap_centre_px()
        ref = displacement(*centre)
        tx, ty = pair.translation_px
        corners = [(x, y) for x in (max(0.0, -tx), min(2560.0, 2560 - tx))
                   for y in (max(0.0, -ty), min(2560.0, 2560 - ty))]
        trend = max(float(np.hypot(*(displacement(*c) - ref))) for c in corners)
        fit = np.hypot(*(where[inliers] + modes[inliers] - (where[inliers] @ model[:, :2].T
                                                             + model[:, 2])).T)
        return {"dx_px": round(float(ref[0]), 3), "dy_px": round(float(ref[1]), 3),
                "cells": int(inliers.sum()), "of_cells": len(modes),
                "sift_cells": f"{int(inliers[:n_sift].sum())}/{n_sift}",
                "trend_px": round(trend, 2), "fit_px": round(float(np.median(fit)), 3)}


def _image(root: Path, name: str) -> Path:
    for sub in ("images", "extras"):
        if (root / sub / name).exists():
            return root / sub / name
    raise FileNotFoundError(f"{root}: no image {name} in images/ or extras/")


def airport_pairs(dataset_dir: Path = AIRBUS) -> list[AirportPair]:
    """Every row of ``airport_pairs.csv``, in file order."""
    out = []
    with open(dataset_dir / "airport_pairs.csv", newline="") as f:
        for row in csv.DictReader(f):
            out.append(AirportPair(row["group"], _image(dataset_dir, row["image_a"]),
                                   _image(dataset_dir, row["image_b"]), float(row["overlap"]),
                                   row["same_acquisition"] == "1",
                                   np.array(json.loads(row["h_a_to_b"]), float)))
    return out


def unrelated_pairs(pairs: list[AirportPair]) -> list[AirportPair]:
    """Controls: the first BEFORE of each group against the first AFTER of the next group
    (two airports), fully overlapping."""
    firsts = {}
    for p in pairs:
        firsts.setdefault(p.group, p)
    groups = list(firsts)
    return [AirportPair(f"{g}~{h}", firsts[g].before, firsts[h].after, 1.0, False, np.eye(3))
            for g, h in zip(groups, groups[1:] + groups[:1])]


def simulated_error_px(seed: int, index: int, max_error_px: float) -> tuple[float, float]:
    """The georeference error of pair ``index``: seeded, uniform in +/-``max_error_px`` per
    axis, whole pixels for every third pair."""
    rng = np.random.default_rng([seed, index])
    if index % 3 == 0:
        return tuple(float(v) for v in rng.integers(-int(max_error_px), int(max_error_px) + 1, 2))
    return tuple(float(v) for v in np.round(rng.uniform(-max_error_px, max_error_px, 2), 3))


def true_translation_px(pair: AirportPair, reference: dict | None) -> tuple[float, float]:
    """The translation taken as true: the ground reference where three cells or more agree
    (whole pixels for two crops of one acquisition when it is within 0.1 px of them: G5's
    re-cut is not), else the homography's."""
    if reference and reference.get("dx_px") is not None and reference.get("cells", 0) >= 3:
        t = np.array([reference["dx_px"], reference["dy_px"]])
        if pair.same_acquisition and np.abs(t - np.round(t)).max() < 0.1:
            t = np.round(t)
        return float(t[0]), float(t[1])
    return pair.translation_px


def aligned_share(votes: np.ndarray, translation_px, within_px: float = 3.0) -> float:
    """Share of the ground reference's votes (displacements) within ``within_px`` of a
    translation: how much of the scene one shift aligns, whatever the truth of a split pair."""
    if not len(votes):
        return math.nan
    return float(np.mean(np.hypot(*(votes - np.asarray(translation_px)).T) <= within_px))


def register_airport_pair(pair: AirportPair, error_px: tuple[float, float], before: Path,
                          folder: Path, config: Config, *, reference: dict | None = None,
                          votes: np.ndarray | None = None, placement: str = "reference") -> dict:
    """Wrap AFTER where a translation and the error put it, run the co-registration stage
    (:func:`~pipeline.coreg.register.register`, its gate included) and compare with the truth.

    ``placement``: ``reference`` places AFTER by :func:`true_translation_px`, so that the truth
    is the error alone; ``homography`` by the homography's translation, so that the truth also
    holds what it misses. A refused pair's error is that of the plain window consensus
    (:func:`measure_shift`).
    """
    true_t = np.array(true_translation_px(pair, reference))
    placed_t = true_t if placement == "reference" else np.array(pair.translation_px)
    after = wrap_plain_image(pair.after, folder / "after.tif", gsd_m=GSD_M,
                             offset_px=tuple(-placed_t + error_px))
    truth = np.asarray(error_px) + true_t - placed_t
    t = time.perf_counter()
    reason = ""
    with open_scene(before, after, config) as scene:
        try:
            registration = register(scene, config)
            shift, refused = registration.shift, False
            reason = getattr(registration, "reason", "")  # none before the ground plane
        except RegistrationError as err:
            refused, reason = True, err.reason
            shift = measure_shift(scene, matching_windows(scene, config), config)
        overlap = scene.validity.overlap
    seconds = time.perf_counter() - t
    error = math.nan if shift is None else math.hypot(shift.dx_px - truth[0], shift.dy_px - truth[1])
    votes = np.zeros((0, 2)) if votes is None else votes
    aligned = math.nan
    if shift is not None:  # the translation the estimate implies, image_a onto image_b
        aligned = aligned_share(votes, placed_t + (shift.dx_px, shift.dy_px) - np.asarray(error_px))
    return {"truth": truth, "refused": refused, "reason": reason, "overlap": overlap,
            "seconds": seconds, "shift": shift, "error": error, "reference": reference or {},
            "h_miss": np.array(pair.translation_px) - true_t, "aligned": aligned,
            "ref_aligned": aligned_share(votes, true_t)}


def _print_row(k: int, pair: AirportPair, row: dict) -> None:
    s = row["shift"]
    est = f"{s.dx_px:>8.3f} {s.dy_px:>8.3f}" if s is not None else f"{'-':>8} {'-':>8}"
    used = f"{s.n_inliers}/{len(s.windows)}" if s is not None else "0/0"
    status = "REFUSED" if row["refused"] else "ok"
    method = row["reason"] if row["refused"] else s.method if s is not None else "no window"
    if row["reason"] and not row["refused"]:
        method += f" ({row['reason']})"
    ref = row["reference"]
    cells = f"{ref.get('cells', 0)}/{ref.get('of_cells', 0)}" if ref else "-"
    spread = f"{ref['trend_px']:>6.1f}" if ref.get("trend_px") is not None else f"{'-':>6}"
    print(f"{k:>3} {pair.group:>6} {pair.before.name[:8]} {pair.after.name[:8]} "
          f"{row['overlap']:>5.2f} {int(pair.same_acquisition):>4} "
          f"{row['h_miss'][0]:>7.2f} {row['h_miss'][1]:>7.2f} {cells:>7} {spread} "
          f"{row['truth'][0]:>7.3f} {row['truth'][1]:>7.3f} {est} "
          f"{row['error']:>7.3f} {row['aligned']:>5.2f} {row['ref_aligned']:>5.2f} "
          f"{(s.quality if s else 0):>5.2f} "
          f"{used:>7} {status:>7} {row['seconds']:>5.1f}  {method}", flush=True)


def _percentiles(errors) -> str:
    e = np.asarray([x for x in errors if math.isfinite(x)])
    if not e.size:
        return "none"
    p50, p90, p95 = np.percentile(e, [50, 90, 95])
    return (f"n {e.size:>3}, median {p50:6.3f}, p90 {p90:6.3f}, p95 {p95:6.3f}, max {e.max():7.3f};"
            f" > 0.5 px {int((e > 0.5).sum()):>2}, > 1 px {int((e > 1).sum()):>2}, "
            f"> 3 px {int((e > 3).sum()):>2}")


def airports(*, seed: int, max_error_px: float, groups: set[str] | None, limit: int | None,
             controls: bool, placement: str) -> None:
    if not (AIRBUS / "airport_pairs.csv").exists():
        print(f"Airbus airport pairs absent ({AIRBUS})")
        return
    config = _config(nodata=0)
    pairs = airport_pairs()
    references = GroundReference()
    chosen = [(k, p) for k, p in enumerate(pairs) if groups is None or p.group in groups]
    chosen = chosen[:limit] if limit else chosen
    print(f"Airbus airport pairs: {len(chosen)} of {len(pairs)}, georeference error up to "
          f"+/-{max_error_px} px a axis (seed {seed}), min_quality "
          f"{config.coregistration.min_quality}")
    print(f"AFTER placed by the {placement} translation. h_miss: the homography's translation"
          " less the true one (the ground reference, GroundReference: votes agreeing with its"
          " model, how far the model departs from one shift at the overlap's corners; whole"
          " pixels for crops of one acquisition). al3, r_al3: share of the reference's votes"
          " within 3 px of the estimate, of the reference.")
    print(f"{'#':>3} {'group':>6} {'before':8} {'after':8} {'ovl':>5} {'same':>4} "
          f"{'h_miss x':>7} {'h_miss y':>7} {'cells':>7} {'trend':>6} {'true dx':>7} {'true dy':>7} "
          f"{'est dx':>8} {'est dy':>8} {'error':>7} {'al3':>5} {'r_al3':>5} {'qual':>5} "
          f"{'in/win':>7} {'status':>7} {'s':>5}  method or reason")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wrapped: dict[Path, Path] = {}
        for k, pair in chosen:
            if pair.before not in wrapped:
                wrapped[pair.before] = wrap_plain_image(pair.before, tmp / f"{len(wrapped)}.tif",
                                                        gsd_m=GSD_M)
            reference = references(pair)
            row = register_airport_pair(pair, simulated_error_px(seed, k, max_error_px),
                                        wrapped[pair.before], tmp, config, reference=reference,
                                        votes=references.votes(pair), placement=placement)
            _print_row(k, pair, row)
            rows.append((pair, row))
        control_rows = []
        if controls:
            print("\nunrelated controls (two airports; each must be refused):")
            for k, pair in enumerate(unrelated_pairs(pairs)):
                before = wrap_plain_image(pair.before, tmp / "control.tif", gsd_m=GSD_M)
                row = register_airport_pair(pair, simulated_error_px(seed, 1000 + k, max_error_px),
                                            before, tmp, config)
                _print_row(k, pair, row)
                control_rows.append(row)
    accepted = [(p, r) for p, r in rows if not r["refused"]]
    refused = [(p, r) for p, r in rows if r["refused"]]
    print(f"\nsummary: {len(rows)} pairs, refused {len(refused)}, accepted {len(accepted)}")
    def clear(p, r):  # a reference most votes agree on, the ground nearly one shift
        ref = r["reference"]
        return p.same_acquisition or (ref.get("cells", 0) >= 0.5 * max(ref.get("of_cells", 1), 1)
                                      and ref.get("trend_px", 99) <= 3.0)

    for label, subset in (
            ("accepted", accepted),
            ("accepted, one acquisition", [x for x in accepted if x[0].same_acquisition]),
            ("accepted, other dates", [x for x in accepted if not x[0].same_acquisition]),
            ("accepted, clear reference", [x for x in accepted if clear(*x)]),
            ("accepted, split reference", [x for x in accepted if not clear(*x)]),
            ("accepted, G8", [x for x in accepted if x[0].group == "G8"]),
            ("refused (plain consensus)", refused)):
        print(f"  error px, {label:<27} " + _percentiles(r["error"] for _, r in subset))
    gap = np.array([r["ref_aligned"] - r["aligned"] for _, r in accepted])
    al3 = np.array([r["aligned"] for _, r in accepted])
    print(f"  scene aligned within 3 px (share of reference votes), accepted: median {np.nanmedian(al3):.2f},"
          f" p10 {np.nanpercentile(al3, 10):.2f}; the reference's less the estimate's: median "
          f"{np.nanmedian(gap):+.3f}, over 0.1 in {int(np.nansum(gap > 0.1))} pairs")
    for p, r in refused:
        print(f"    refused #{pairs.index(p)} {p.group} {p.before.name[:8]} -> {p.after.name[:8]}:"
              f" {r['reason']}")
    methods: dict[str, int] = {}
    for _, r in accepted:
        methods[r["shift"].method] = methods.get(r["shift"].method, 0) + 1
    print("  methods: " + ", ".join(f"{m}: {n}" for m, n in sorted(methods.items())))
    times = [r["seconds"] for _, r in rows]
    print(f"  time per pair: median {np.median(times):.2f} s, max {max(times):.2f} s")
    if control_rows:
        n_ref = sum(r["refused"] for r in control_rows)
        print(f"  unrelated controls: {n_ref} of {len(control_rows)} refused")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--airports", action="store_true",
                    help="only the Airbus airport pairs with a simulated georeference error")
    ap.add_argument("--seed", type=int, default=7, help="seed of the simulated errors")
    ap.add_argument("--max-error-px", type=float, default=6.0)
    ap.add_argument("--groups", help="comma-separated groups (G1,G8), default all")
    ap.add_argument("--limit", type=int, help="at most this many pairs")
    ap.add_argument("--no-controls", action="store_true", help="leave out the unrelated pairs")
    ap.add_argument("--place", choices=("reference", "homography"), default="reference",
                    help="place AFTER by the true translation (default) or the homography's")
    args = ap.parse_args()
    if args.airports:
        airports(seed=args.seed, max_error_px=args.max_error_px,
                 groups=set(args.groups.split(",")) if args.groups else None, limit=args.limit,
                 controls=not args.no_controls, placement=args.place)
        return
    synthetic(6 if args.quick else 16, args.size)
    real()


if __name__ == "__main__":
    sys.exit(main())
