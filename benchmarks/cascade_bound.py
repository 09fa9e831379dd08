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
  objects, as good as the final mask;
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
from common import large_pair, plain_read_s  # noqa: E402
from floor import run as floor_run  # noqa: E402
from speed import SAMPLE, measure  # noqa: E402

from pipeline.change.difference import mask_reach_px  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402

PASSES = ("read", "difference", "blobs", "sightings")
TILE_PX = 512  # the speed pair's file tiles


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
    cell = max(1, round(2.0 / res_m))  # 2 m cells
    hc, wc = h // cell, w // cell
    cells = mask[:hc * cell, :wc * cell].reshape(hc, cell, wc, cell).any(axis=(1, 3))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cells.astype(np.uint8), connectivity=8)
    least = min(c.length_m[0] * c.width_m[0] for c in config.classes) / (cell * res_m) ** 2
    keep = np.r_[False, stats[1:, cv2.CC_STAT_AREA] >= least][labels].astype(np.uint8)
    grown = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_RECT,
                                                        (2 * -(-reach // cell) + 1,) * 2))
    objects = np.zeros((h, w), np.uint8)
    objects[:hc * cell, :wc * cell] = np.repeat(np.repeat(grown, cell, 0), cell, 1)

    def shares(kept: np.ndarray) -> tuple[float, float]:
        th, tw = -(-h // TILE_PX), -(-w // TILE_PX)
        padded = np.zeros((th * TILE_PX, tw * TILE_PX), bool)
        padded[:h, :w] = kept
        tiles = padded.reshape(th, TILE_PX, tw, TILE_PX).any(axis=(1, 3))
        return float(kept.mean()), float(tiles.mean())

    return {"oracle": shares(oracle), "objects": shares(objects)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", type=Path, help="YAML configuration passed to detect-changes")
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
    print(f"{'screen':<8} {'kept':>6} {'tiles':>6} {'detector':>9} {'bound s':>8} {'reads':>6} "
          f"{'outside halved':>15}")
    for name, (kept, tiles) in shares.items():
        for where, det in (("scene", detector), ("near", kept * detector)):
            passes_s = decode + (kept * passes + det) / args.threads
            bound, halved = passes_s + rest, passes_s + rest / 2
            print(f"{name:<8} {kept:6.3f} {tiles:6.3f} {where:>9} {bound:8.2f} "
                  f"{bound / read:6.2f} {halved / read:15.2f}", flush=True)


if __name__ == "__main__":
    main()
