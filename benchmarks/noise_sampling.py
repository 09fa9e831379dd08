"""How much sampling the local noise level moves the local gain, on real pairs.

The local noise unit (``difference.local_noise_m``) counts the noise level on a lattice of
samples (``pipeline.change.difference.NOISE_SAMPLE_STEP``: every second pixel of every second row).
For each pair this prints how far the gain map of each step lies from the one counted on
every pixel: the median, 99th percentile and largest |log ratio| over the pixels.

    python benchmarks/noise_sampling.py                       # three Airbus pairs
    python benchmarks/noise_sampling.py G1_20bfce20_534ba32c  # cases of benchmarks/accuracy.py

Needs the cases that ``benchmarks/accuracy.py`` caches in ``benchmarks/.cache/accuracy``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from pipeline import run
from pipeline.change import difference
from pipeline.change.noise import fit_noise_model
from pipeline.change.radiometry import comparable, normalise
from pipeline.config import Config
from pipeline.coreg.register import matching_windows
from pipeline.io.scene import open_scene

CASES = Path(__file__).resolve().parent / ".cache" / "accuracy"


def gain_maps(case: Path, steps: list[int], config: Config) -> dict[int, np.ndarray]:
    """The whole-array gain map of ``case`` for each sampling step (ref sampled alike)."""
    before, after = case / "before.tif", case / "after.tif"
    shift, _ = run.coregister_pair(before, after, config)
    maps = {}
    with open_scene(before, after, config) as scene:
        windows = matching_windows(scene, config)
        with scene.on_grid((shift.dx_px, shift.dy_px)) as a_vrt:
            whole = Window(0, 0, scene.grid.width, scene.grid.height)
            b, vb, a, va = scene.read((scene.b_ds, a_vrt), whole)
            for step in steps:
                difference.NOISE_SAMPLE_STEP = step
                noise = fit_noise_model(scene, a_vrt, windows, config)
                bc, ac = comparable(b, a)
                ac = normalise(ac, noise.radiometry, whole)
                smooth = config.difference.smoothing_px
                sb = [difference.smooth(x, smooth) for x in bc]
                sa = [difference.smooth(x, smooth) for x in ac]
                maps[step] = difference.local_gain_map(sb, sa, vb & va, noise.local)
    return maps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=["G3_4c9d2482_996ba764", "G4_54b4e42b_56e2d3d3",
                                                 "G7_1e7e0450_4ca65749"])
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 4])
    args = ap.parse_args()
    config = Config()
    print(f"{'case':<24} {'step':>4} {'median':>7} {'p99':>7} {'max':>7}   |log(gain / gain every pixel)|")
    for name in args.cases:
        case = CASES / name
        if not case.is_dir():
            sys.exit(f"{case}: not found; run benchmarks/accuracy.py first")
        maps = gain_maps(case, [1, *args.steps], config)
        for step in args.steps:
            r = np.abs(np.log(maps[step] / maps[1]))
            print(f"{name:<24} {step:>4} {np.median(r):>7.4f} {np.quantile(r, 0.99):>7.4f} "
                  f"{r.max():>7.4f}", flush=True)


if __name__ == "__main__":
    main()
