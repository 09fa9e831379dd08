"""The floor under ``detect-changes``'s speed: the least per-pixel work any pair must get.

On the cached large synthetic pair of ``benchmarks/speed.py`` it times, block by block (1024
px, no margin) on ``--threads`` threads with their own file handles, cumulative steps:

    read     both files' pixels (AFTER with the 4 px a cubic shift needs)
    shift    + AFTER shifted by a fraction of a pixel (separable cubic, float32), |difference|
    smooth   + both images smoothed (Gaussian, sigma 0.8 px) before the difference

and prints each against a plain single-threaded rasterio read of both files in the same run
(the ratio of issue 5). What the pipeline adds above the last line is its own cost: block
margins, the second pass, the noise unit, morphology, blobs and the outputs.

    python benchmarks/floor.py               # 16000 px, 2 threads
    python benchmarks/floor.py --size 8192 --threads 1
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).parent))
from common import large_pair, plain_read_s  # noqa: E402

from pipeline.io.warp import cubic_weights  # noqa: E402

STEPS = ("read", "shift", "smooth")


def run(before: Path, after: Path, size: int, threads: int, step: str, block: int = 1024
        ) -> float:
    """Wall seconds of ``step`` (and the steps before it) over every block of the pair."""
    blocks = [(r, c) for r in range(0, size, block) for c in range(0, size, block)]
    kx = ky = cubic_weights(0.3)
    full = Window(0, 0, size, size)

    def work(items) -> None:
        with rasterio.open(before) as b, rasterio.open(after) as a:
            for r, c in items:
                w = Window(c, r, min(block, size - c), min(block, size - r))
                x = b.read(window=w)
                y = a.read(window=Window(c - 2, r - 2, w.width + 4, w.height + 4).intersection(full))
                if step == "read":
                    continue
                x, y = x.astype(np.float32), y.astype(np.float32)
                for k in range(x.shape[0]):
                    ys = cv2.sepFilter2D(y[k], -1, kx, ky)[:x.shape[1], :x.shape[2]]
                    xs = x[k]
                    if step == "smooth":
                        xs = cv2.GaussianBlur(xs, (0, 0), 0.8)
                        ys = cv2.GaussianBlur(ys, (0, 0), 0.8)
                    np.count_nonzero(cv2.absdiff(xs, ys) > 30)

    cv2.setNumThreads(1)  # parallel blocks, as the pipeline runs them
    t = time.perf_counter()
    workers = [threading.Thread(target=work, args=(blocks[i::threads],)) for i in range(threads)]
    for th in workers:
        th.start()
    for th in workers:
        th.join()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    before, after = large_pair(args.size)
    plain = min(plain_read_s(before, after) for _ in range(2))
    print(f"{args.size} px, plain read of both files (1 thread): {plain:.2f} s")
    for step in STEPS:
        wall = run(before, after, args.size, args.threads, step)
        print(f"  {step:<7} {args.threads} threads: {wall:6.2f} s  ratio {wall / plain:5.2f}",
              flush=True)


if __name__ == "__main__":
    main()
