"""The least time a cascade (issue 28) could take on a pair, in plain reads of the pair.

A cascade computes the change mask, the blobs and the verifier only near what a screen keeps.
This script runs ``detect-changes`` (the defaults, or ``--config``) on the cached synthetic
pair of ``benchmarks/speed.py`` and bounds such a design from below with its own figures:

- **decode**: both files read whole, block by block on ``--threads`` threads, the faster of
  two runs (the screening pass must decode every pixel once; ``benchmarks/floor.py``'s
  ``read`` step);
- **kept share**: the share of the pixels a screen must keep for the detections to stay the
  same. ``oracle``: the detections' boxes grown by the mask's reach (``mask_reach_px``), what a
  screen that knew the answer would keep. ``objects``: the change mask's own components (on 2
  m cells) at least the smallest class's least area, grown the same: a screen at the level of
  objects, as good as the final mask. ``raw``: a screen that could run before the mask, on
  the screening pass's own data: both images averaged over 2 m cells (AFTER through the
  measured shift), per band a robust linear map (medians and MADs) and its residual's smooth
  part (an 82 m box) taken away, cells over ``--sigma`` of the residual's MAD sigma in some
  band, components of at least ``--cells`` cells kept, grown by the mask's reach. Its row
  also says how many of the run's detections found by the difference lie on no kept cell;
- **passes**: the run's thread-seconds in pass 1 and pass 2 (``read``, ``difference``,
  ``blobs``, ``sightings``), scaled by the kept share, over the threads; the ``detector``'s
  over the whole scene (``scene``) or scaled by the share (``near``, as ``detector.where:
  changes`` looks);
- **outside**: the run's wall time less its passes' thread-seconds over the threads (imports,
  co-registration, the noise model, the outputs, the passes' idle ends), less the level
  field's read (the screening pass would decode the scene for it anyway).

Each bound assumes the kept windows cost nothing more than their share of today's passes:
no margins re-read, no extra decode for windows scattered over the files' tiles (the share of
512 px tiles they touch is printed too). The real cascade can only be slower.

    python benchmarks/cascade_bound.py                 # 16000 px, 2 threads
    python benchmarks/cascade_bound.py --size 8192 --config my.yaml
    python benchmarks/cascade_bound.py --dump /tmp/verifier   # and the raw screen on real pairs

``--dump`` (a ``benchmarks/verifier.py dump`` folder) also runs the raw screen on each real
pair of that dump (read from accuracy.py's cache) and counts the pair's candidates found by
the difference that lie on no kept cell (``_label`` 1: a changed aircraft of the truth). It
also counts the changed aircraft of the truth that a candidate matches and that the detector
saw in neither image: what a screen made of the detector's sightings would miss.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import WORK as PAIRS  # noqa: E402
from accuracy import real_config  # noqa: E402
from common import large_pair, plain_read_s  # noqa: E402
from floor import run as floor_run  # noqa: E402
from speed import SAMPLE, measure  # noqa: E402

from pipeline.change.difference import mask_reach_px  # noqa: E402
from pipeline.change.noise import coarse_pair  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.coreg.register import register  # noqa: E402
from pipeline.detect.aircraft import load_detector  # noqa: E402
from pipeline.io.readers import stripe_px  # noqa: E402
from pipeline.io.scene import open_scene  # noqa: E402

PASSES = ("read", "difference", "blobs", "sightings")
TILE_PX = 512  # the speed pair's file tiles
SCREEN_CELL_M = 2.0
SMOOTH_CELLS = 41  # the residual's smooth part: an 82 m box of 2 m cells


def _shares(kept: np.ndarray) -> tuple[float, float]:
    """The share of the pixels ``kept`` holds, and of the 512 px file tiles it touches."""
    h, w = kept.shape
    th, tw = -(-h // TILE_PX), -(-w // TILE_PX)
    padded = np.zeros((th * TILE_PX, tw * TILE_PX), bool)
    padded[:h, :w] = kept
    tiles = padded.reshape(th, TILE_PX, tw, TILE_PX).any(axis=(1, 3))
    return float(kept.mean()), float(tiles.mean())


def screen_cells(before: Path, after: Path, config: Config, threads: int):
    """Both images averaged over 2 m cells of the BEFORE grid, AFTER through the shift the
    run measures (:class:`~pipeline.change.noise.CoarsePair`), and the pixel size."""
    with open_scene(before, after, config) as scene:
        reg = register(scene, config, allow_unregistered=True)
        with scene.on_grid(reg.offset) as a_vrt:
            pool = scene.reader_pool(reg.offset, a_vrt, threads)
            res = scene.grid.mean_res_m
            block = config.processing.block_px
            cells = coarse_pair(pool, scene, max(1, round(SCREEN_CELL_M / res)), block_px=block,
                                stripe_px=stripe_px(scene.b_ds, scene.a_ds, block))
    return cells, res


def raw_screen(cells, sigma: float, least_cells: int) -> np.ndarray:
    """The kept cells (uint8): some band's residual, after a robust linear map and less its
    smooth part, over ``sigma`` MAD sigmas, in components of ``least_cells`` cells or more."""
    v = cells.valid
    z = np.zeros(v.shape, np.float32)
    if not v.any():
        return z.astype(np.uint8)
    weight = cv2.blur(v.astype(np.float32), (SMOOTH_CELLS,) * 2)
    for x, y in zip(cells.before, cells.after):
        mx, my = np.median(x[v]), np.median(y[v])
        gain = np.median(np.abs(y[v] - my)) / max(np.median(np.abs(x[v] - mx)), 1e-6)
        r = np.where(v, y - gain * x - (my - gain * mx), 0).astype(np.float32)
        r = np.where(v, r - cv2.blur(r, (SMOOTH_CELLS,) * 2) / np.maximum(weight, 1e-3), 0)
        z = np.maximum(z, np.abs(r) / max(1.4826 * float(np.median(np.abs(r[v]))), 1e-6))
    _, labels, stats, _ = cv2.connectedComponentsWithStats((z > sigma).astype(np.uint8),
                                                           connectivity=8)
    return np.r_[False, stats[1:, cv2.CC_STAT_AREA] >= least_cells][labels].astype(np.uint8)


def raw_share(cells, res_m: float, config: Config, sigma: float, least_cells: int,
              found: list[dict]) -> tuple[float, float, list[dict]]:
    """The raw screen's share of the pixels and of the file tiles, grown by the mask's reach,
    and the ``found`` (detections' properties) that lie on no kept cell."""
    keep = raw_screen(cells, sigma, least_cells)
    f = cells.factor
    grow = -(-mask_reach_px(config.difference, res_m) // f)
    grown = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * grow + 1,) * 2))
    missed = []
    for p in found:
        (col, row), half = p["centroid_px"], max(p["length_m"], p["width_m"]) / 2 / res_m + f
        if not keep[max(int((row - half) // f), 0):int((row + half) // f) + 1,
                    max(int((col - half) // f), 0):int((col + half) // f) + 1].any():
            missed.append(p)
    share, tiles = _shares(np.repeat(np.repeat(grown, f, 0), f, 1))
    return share, tiles, missed


def kept_shares(out: Path, config: Config) -> dict[str, tuple[float, float]]:
    """Per screen (``oracle``, ``objects``): the share of the BEFORE grid's pixels it keeps,
    and the share of the 512 px file tiles its windows touch."""
    with rasterio.open(out / "change_mask.tif") as ds:
        mask = ds.read(1) == 1
        res_m = abs(ds.transform.a)
    h, w = mask.shape
    reach = mask_reach_px(config.difference, res_m)
    oracle = np.zeros((h, w), np.uint8)
    features = json.loads((out / "detections.geojson").read_text())["features"]
    for f in features:
        p = f["properties"]
        (col, row), half = p["centroid_px"], max(p["length_m"], p["width_m"]) / 2 / res_m
        r0, c0 = (max(int(v - half - reach), 0) for v in (row, col))
        oracle[r0:int(row + half + reach) + 1, c0:int(col + half + reach) + 1] = 1
    cell = max(1, round(SCREEN_CELL_M / res_m))
    hc, wc = h // cell, w // cell
    cells = mask[:hc * cell, :wc * cell].reshape(hc, cell, wc, cell).any(axis=(1, 3))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8), connectivity=8)
    least = min(c.length_m[0] * c.width_m[0] for c in config.classes) / (cell * res_m) ** 2
    keep = np.r_[False, stats[1:, cv2.CC_STAT_AREA] >= least][labels].astype(np.uint8)
    grown = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_RECT,
                                                        (2 * -(-reach // cell) + 1,) * 2))
    objects = np.zeros((h, w), np.uint8)
    objects[:hc * cell, :wc * cell] = np.repeat(np.repeat(grown, cell, 0), cell, 1)
    return {"oracle": _shares(oracle), "objects": _shares(objects)}


def real_pairs(dump: Path, config: Config, sigma: float, least_cells: int, threads: int
               ) -> None:
    """The raw screen on every real pair of a ``verifier.py dump``: its share of the pixels,
    and the pairs' candidates found by the difference that lie on no kept cell."""
    config = real_config(config)
    shares, missed, truth_missed, candidates = [], 0, 0, 0
    sighted = [0, 0]  # changed aircraft of the truth some candidate matches: sighted, all
    least = config.detector.threshold or load_detector(config.detector.model).threshold
    for path in sorted((dump / "cases").glob("G*.json")):
        case = json.loads(path.read_text())
        if case["kind"] != "real":
            continue
        for f in case["aircraft"]:
            p = f["properties"]
            if p.get("_label") == 1:
                sighted[1] += 1
                sighted[0] += max(p.get("detector_before") or 0.0,
                                  p.get("detector_after") or 0.0) >= least
        found = [f["properties"] for f in case["aircraft"] + case["others"]
                 if f["properties"].get("found_by", "difference") == "difference"]
        folder = PAIRS / case["name"]
        cells, res = screen_cells(folder / "before.tif", folder / "after.tif", config, threads)
        share, _, lost = raw_share(cells, res, config, sigma, least_cells, found)
        shares.append(share)
        candidates += len(found)
        missed += len(lost)
        truth_missed += sum(p.get("_label") == 1 for p in lost)
    if shares:
        print(f"raw screen on {len(shares)} real pairs of {dump}: share of the pixels kept "
              f"mean {np.mean(shares):.3f}, median {np.median(shares):.3f}, least "
              f"{min(shares):.3f}, most {max(shares):.3f}; of {candidates} candidates found by "
              f"the difference {missed} on no kept cell ({truth_missed} changed aircraft of the "
              f"truth)")
    print(f"a detector screen (the detector's sightings): of the {sighted[1]} changed aircraft "
          f"of the truth that some candidate matches, {sighted[0]} have a score of at least "
          f"{least:g} in one image or the other, {sighted[1] - sighted[0]} none")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", type=Path, help="YAML configuration passed to detect-changes")
    ap.add_argument("--sigma", type=float, default=3.0, help="the raw screen's threshold")
    ap.add_argument("--cells", type=int, default=4,
                    help="the raw screen's least component, in 2 m cells")
    ap.add_argument("--dump", type=Path, help="also the raw screen on this dump's real pairs")
    args = ap.parse_args()
    config = load_config(args.config) if args.config else Config()
    before, after = large_pair(args.size)
    exe = str(Path(sys.executable).parent / "detect-changes")
    with tempfile.TemporaryDirectory() as tmp:  # compiles what the command imports, once
        measure([exe, str(SAMPLE / "before.tif"), str(SAMPLE / "after.tif"), "--out", tmp, "-q"])
    read = min(plain_read_s(before, after) for _ in range(2))
    decode = min(floor_run(before, after, args.size, args.threads, "read") for _ in range(2))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        wall, _ = measure([exe, str(before), str(after), "--out", str(out), "-q", "--threads",
                           str(args.threads), *(["--config", str(args.config)]
                                                if args.config else [])])
        t = json.loads((out / "report.json").read_text())["timings_s"]
        shares = kept_shares(out, config)
        found = [f["properties"] for f in
                 json.loads((out / "detections.geojson").read_text())["features"]
                 if f["properties"]["found_by"] == "difference"]
    cells, res = screen_cells(before, after, config, args.threads)
    kept, tiles, lost = raw_share(cells, res, config, args.sigma, args.cells, found)
    shares["raw"] = (kept, tiles)
    passes = sum(t.get(k, 0.0) for k in PASSES)
    detector = t.get("detector", 0.0)
    outside = wall - (passes + detector) / args.threads
    rest = outside - t.get("level", 0.0) / args.threads
    print(f"{args.size} px on {args.threads} threads: plain read {read:.2f} s (1 thread); "
          f"both files decoded on {args.threads} threads {decode:.2f} s")
    print(f"the run: {wall:.2f} s = {wall / read:.2f} reads; passes {passes:.1f} thread-s "
          f"(read, difference, blobs, sightings), detector {detector:.1f} thread-s, outside the "
          f"passes {outside:.1f} s (of which the level field's read {t.get('level', 0.0):.1f} "
          f"thread-s)")
    print(f"raw screen ({args.sigma:g} sigma, {args.cells} cells): {len(lost)} of the "
          f"{len(found)} detections found by the difference on no kept cell")
    print(f"{'screen':<8} {'kept':>6} {'tiles':>6} {'detector':>9} {'bound s':>8} {'reads':>6} "
          f"{'outside halved':>15}")
    for name, (kept, tiles) in shares.items():
        for where, det in (("scene", detector), ("near", kept * detector)):
            passes_s = decode + (kept * passes + det) / args.threads
            bound, halved = passes_s + rest, passes_s + rest / 2
            print(f"{name:<8} {kept:6.3f} {tiles:6.3f} {where:>9} {bound:8.2f} "
                  f"{bound / read:6.2f} {halved / read:15.2f}", flush=True)
    if args.dump:
        real_pairs(args.dump, config, args.sigma, args.cells, args.threads)


if __name__ == "__main__":
    main()
