"""Where the real pairs' changed aircraft are lost: the furthest stage of pass 2 each one reached.

For every changed aircraft of the truth (``benchmarks/accuracy.py``'s cases), the blobs of
pass 2 whose bounding box covers the truth box's centre are found, and the furthest stage any
of them reached is counted:

    nothing         no blob of pass 2 covers it (no mask there, or only specks beside it)
    small, size     too small to measure / fits no class and is not an oversized join
    weak            mean change score too low against its ground (verifier.min_sigma)
    static, shadow, vehicle-group, noclass-or-compact   dropped by that classical rule (with
                    the verifier on, the rules drop only launchers: an aircraft that breaks one
                    is judged by the verifier, and noclass-or-compact means no class holds
                    even its length)
    launcher-weak, launcher   classified as a launcher (dropped when weak)
    verifier        judged unlike an aircraft change by the learned verifier
    detected-wrongchange, detected   reported, with the wrong or the right change

    python benchmarks/misses.py                       # every real pair (about 6 min)
    python benchmarks/misses.py G6_0641acc3_b6e9f8fc  # some of them

It instruments copies of ``pipeline.detect.candidates._considered`` and ``_candidate`` and of
``pipeline.detect.judge.judge`` (and fails loudly when they no longer have the lines it hooks): a diagnosis tool, not a score. The match is by the truth
box's centre, looser than accuracy.py's scoring, so its "detected" differs from that tp.
"""
from __future__ import annotations

import argparse
import collections
import inspect
import json
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import rasterio
from accuracy import (
    DATASET,
    real_config,  # the JPEGs' black fill is nodata, as accuracy.py runs them
)
from rasterio.warp import transform as warp_transform

from pipeline import run
from pipeline.config import Config, load_config
from pipeline.detect import candidates, judge
from pipeline.detect.classify import change_direction, dropped_by_rule
from pipeline.testing.cases import airport_pair_cases

CASES = Path(__file__).resolve().parent / ".cache" / "accuracy"
STAGES = ["nothing", "small", "size", "weak", "static", "shadow", "vehicle-group",
          "noclass-or-compact", "launcher-weak", "launcher", "verifier", "detected-wrongchange",
          "detected"]
LOG: list[tuple[tuple[int, int, int, int], str]] = []

HOOKS = {  # function -> [(its line, the same line with its stage logged)]
    (candidates, "_considered"): [
        ("    if rules.too_small(blob):\n        return False",
         "    if rules.too_small(blob):\n        LOG.append((blob.bbox_px, 'small'))\n"
         "        return False"),
        ("    return (rules.split.enabled", "    ok = (rules.split.enabled"),
        ("rules.largest_m[1]))",
         "rules.largest_m[1]))\n    if not ok:\n        LOG.append((blob.bbox_px, 'size'))\n"
         "    return ok"),
    ],
    (candidates, "_candidate"): [
        ("        return None  # weak over its body",
         "        LOG.append((region_blob.bbox_px, 'weak'))\n"
         "        return None  # weak over its body"),
        # judged by the verifier, no rule drops an aircraft: it is made, and the verifier decides
        ("    if det is None:\n        return None",
         "    if det is None:\n"
         "        LOG.append((region_blob.bbox_px, 'noclass-or-compact' if judging else"
         " _rule(region_blob, b, a, region, ring, chip.score, rules.res_m)))\n"
         "        return None"),
        ("    if det.category != \"aircraft\" and (not strong or rule is not None):\n"
         "        return None",
         "    if det.category != \"aircraft\" and (not strong or rule is not None):\n"
         "        LOG.append((region_blob.bbox_px, rule or 'launcher-weak'))\n"
         "        return None\n"
         "    if det.category != 'aircraft':\n"
         "        LOG.append((region_blob.bbox_px, 'launcher'))"),
    ],
    (judge, "judge"): [
        ("                continue  # the verifier finds",
         "                LOG.append((c.det.blob.bbox_px, 'verifier'))\n"
         "                continue  # the verifier finds"),
        ("        dets.append(c.det)",
         "        if c.det.category == 'aircraft':\n"
         "            LOG.append((c.det.blob.bbox_px, 'detected-' + c.det.change))\n"
         "        dets.append(c.det)"),
    ],
}


def _rule(blob, before, after, inside, ring, score, res_m) -> str:
    """Which step of :func:`pipeline.detect.classify.classify_blob` dropped a blob."""
    change, conf, _, _ = change_direction(before, after, inside, ring)
    return (dropped_by_rule(blob, before, after, inside, ring, score=score, res_m=res_m,
                            change=change, conf=conf)
            or "noclass-or-compact")


def instrument() -> None:
    """Replace the functions of :data:`HOOKS` by copies that log each blob's stage in
    :data:`LOG`."""
    for (module, name), hooks in HOOKS.items():
        src = textwrap.dedent(inspect.getsource(getattr(module, name)))
        for old, new in hooks:
            if old not in src:
                sys.exit(f"{module.__name__}.{name} changed: cannot hook {old.strip()[:60]!r}")
            src = src.replace(old, new)
        namespace = module.__dict__
        namespace.update(LOG=LOG, _rule=_rule)
        exec(compile(src, f"misses:{name}", "exec"), namespace)
    run.judge = judge.judge  # run calls it by the name it imported


def stages_of(case: Path, config: Config) -> list[tuple[str, str]]:
    """(change, furthest stage) of every changed truth aircraft of ``case``."""
    LOG.clear()
    with tempfile.TemporaryDirectory() as out:
        run.run_pair(case / "before.tif", case / "after.tif", out, config)
    with rasterio.open(case / "before.tif") as ds:
        crs, inverse = ds.crs, ~ds.transform
    found = []
    for f in json.loads((case / "truth.geojson").read_text())["features"]:
        p = f["properties"]
        if p.get("category") != "aircraft" or p.get("change") not in ("appeared", "disappeared"):
            continue
        lon, lat = zip(*f["geometry"]["coordinates"][0])
        xs, ys = warp_transform("EPSG:4326", crs, lon, lat)
        px = np.array([inverse * (x, y) for x, y in zip(xs, ys)])
        cx, cy = (px.min(axis=0) + px.max(axis=0)) / 2
        best = "nothing"
        for (c0, r0, c1, r1), stage in LOG:
            if not (c0 <= cx <= c1 and r0 <= cy <= r1):
                continue
            if stage.startswith("detected-"):
                stage = "detected" if stage == "detected-" + p["change"] else "detected-wrongchange"
            best = max(best, stage, key=STAGES.index)
        found.append((p["change"], best))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="case folders' names (default: every real pair)")
    ap.add_argument("--config", type=Path, help="pipeline YAML (default: defaults)")
    args = ap.parse_args()
    # the same-acquisition pairs are no-change controls: nothing to lose
    controls = {c.name for c in airport_pair_cases(DATASET) if c.control}
    names = args.cases or sorted(p.name for p in CASES.glob("G*_*")
                                 if p.is_dir() and p.name not in controls)
    if not names:
        sys.exit(f"{CASES}: no cases; run benchmarks/accuracy.py first")
    config = real_config(load_config(args.config) if args.config else Config())
    instrument()
    per_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name in names:
        for _, stage in stages_of(CASES / name, config):
            per_group[name.split("_")[0]][stage] += 1
        print(f"{name}: done", file=sys.stderr, flush=True)
    total = sum(per_group.values(), collections.Counter())
    used = [s for s in STAGES if total[s]]
    print(f"{'group':<6} " + " ".join(f"{s:>{max(len(s), 5)}}" for s in used) + f" {'all':>5}")
    for group in sorted(per_group) + ["all"]:
        c = total if group == "all" else per_group[group]
        print(f"{group:<6} " + " ".join(f"{c[s]:>{max(len(s), 5)}}" for s in used)
              + f" {sum(c.values()):>5}")


if __name__ == "__main__":
    main()
