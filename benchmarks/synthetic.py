"""Detection scores on synthetic airbase pairs: several seeds per difficulty, plus no-change.

    python benchmarks/synthetic.py [--seeds 8] [--size 1024]

Prints precision, recall and F1 (all categories, right category and change required) per pair
and per difficulty, and the detections on no-change pairs (which should be none).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.evaluate import Score, evaluate, load_features
from pipeline.run import run_pair
from pipeline.testing import synth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    print(f"{'difficulty':>10} {'seed':>4} {'truth':>5} {'found':>5} {'tp':>3} {'P':>6} {'R':>6} "
          f"{'F1':>6} {'time s':>6}")
    for difficulty in ("easy", "medium", "hard"):
        total = Score(0, 0, 0)
        for seed in range(args.seeds):
            pair = synth.make_pair(seed=seed, size_px=args.size, scenario="random",
                                   difficulty=difficulty)
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                synth.write_pair(pair, tmp)
                t = time.perf_counter()
                run_pair(tmp / "before.tif", tmp / "after.tif", tmp / "out")
                dt = time.perf_counter() - t
                s = evaluate(load_features(tmp / "truth.geojson"),
                             load_features(tmp / "out" / "detections.geojson"))[("all", "all")]
            total = Score(total.tp + s.tp, total.fp + s.fp, total.fn + s.fn)
            print(f"{difficulty:>10} {seed:>4} {s.tp + s.fn:>5} {s.tp + s.fp:>5} {s.tp:>3} "
                  f"{s.precision:>6.3f} {s.recall:>6.3f} {s.f1:>6.3f} {dt:>6.1f}", flush=True)
        print(f"{difficulty:>10} {'all':>4} {total.tp + total.fn:>5} {total.tp + total.fp:>5} "
              f"{total.tp:>3} {total.precision:>6.3f} {total.recall:>6.3f} {total.f1:>6.3f}\n",
              flush=True)
    false = 0
    for seed in range(args.seeds):
        pair = synth.make_pair(seed=seed, size_px=args.size, scenario="no-change",
                               difficulty=("easy", "medium", "hard")[seed % 3])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            synth.write_pair(pair, tmp)
            false += len(run_pair(tmp / "before.tif", tmp / "after.tif", tmp / "out").detections)
    print(f"no-change pairs: {args.seeds}, detections on them: {false}")


if __name__ == "__main__":
    main()
