"""Speed and memory of ``detect-changes`` on large synthetic pairs, against a plain read.

For each size: wall time, megapixels per second (of the BEFORE grid), peak resident memory of
the ``detect-changes`` process, and the ratio of its wall time to a plain block-by-block
rasterio read of both input files, measured in the same run. Pairs are made once and cached in
``benchmarks/.cache`` (set DETECT_CHANGES_BENCH_CACHE to move it). The aircraft found are scored
against the truth of the synthetic tiles the pair is made of (``common.large_pair_truth``).
The command runs as after a usual install, its modules compiled once and cached (one run on
the sample pair first), whatever ``PYTHONDONTWRITEBYTECODE`` says here.

    python benchmarks/speed.py                 # 4000, 8192 and 16000 px
    python benchmarks/speed.py --sizes 30000   # add the 30000 px pair (about 5 GB of files)
    python benchmarks/speed.py --sizes 16000 --config my.yaml   # another configuration
    python benchmarks/speed.py --sizes 16000 --detector-cost    # and with the detector off

``--detector-cost`` prints the detector's own time in plain reads of the pair (its stage's
thread-seconds over the workers that run it side by side), and runs each pair a second time
with ``detector.enabled: false`` (the classical path) for the difference of the wall times, all
measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import large_pair, large_pair_truth, plain_read_s  # noqa: E402

from pipeline.evaluate import load_features  # noqa: E402
from pipeline.testing.cases import score_case  # noqa: E402

#: the sample pair: one run of it before the table compiles every module the command imports
SAMPLE = Path(__file__).parent.parent / "sample_tiles" / "hmeimim"
MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
           "rc = subprocess.run(sys.argv[1:]).returncode; w = time.perf_counter() - t; "
           "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def child_env() -> dict[str, str]:
    """The environment the command is measured in: this one, but Python may cache the modules
    it compiles, as after a usual install (pip writes them). With ``PYTHONDONTWRITEBYTECODE``
    set, as on the development machine, every run compiled some 900 modules again: 1.7 s of
    each run, measured with cProfile on 2026-12-07."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``cmd``, measured in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True,
                         env=child_env())
    wall, rss_kb, rc = out.stdout.split()[-3:]
    if rc != "0":
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr}")
    return float(wall), int(rss_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 8192, 16000])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--config", help="YAML configuration passed to detect-changes")
    ap.add_argument("--detector-cost", action="store_true",
                    help="also run with the detector off and print what it adds")
    args = ap.parse_args()
    if args.detector_cost and args.config:
        sys.exit("speed: --detector-cost runs the defaults; leave out --config")
    exe = shutil.which("detect-changes") or str(Path(sys.executable).parent / "detect-changes")
    with tempfile.TemporaryDirectory() as tmp:  # compiles what the command imports, once
        measure([exe, str(SAMPLE / "before.tif"), str(SAMPLE / "after.tif"), "--out", tmp, "-q"])
    print(f"{'size':>7} {'MP':>6} {'read s':>7} {'run s':>7} {'MP/s':>6} {'ratio':>6} "
          f"{'peak MB':>8} {'detections':>10}")
    for size in args.sizes:
        before, after = large_pair(size)
        read_s = min(plain_read_s(before, after) for _ in range(2))
        with tempfile.TemporaryDirectory() as tmp:
            wall, rss = measure([exe, str(before), str(after), "--out", tmp, "-q",
                                 "--threads", str(args.threads),
                                 *(["--config", args.config] if args.config else [])])
            report = json.loads((Path(tmp) / "report.json").read_text())
            found = load_features(Path(tmp) / "detections.geojson")
        mp = size * size / 1e6
        print(f"{size:>7} {mp:>6.0f} {read_s:>7.2f} {wall:>7.2f} {mp / wall:>6.1f} "
              f"{wall / read_s:>6.2f} {rss:>8.0f} {report['detections']:>10}", flush=True)
        print("        stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()),
              flush=True)
        sc = score_case(large_pair_truth(size), found).score
        print(f"        aircraft against the tiles' truth: tp {sc.tp} fp {sc.fp} fn {sc.fn}, "
              f"P {sc.precision:.3f} R {sc.recall:.3f} F1 {sc.f1:.3f}", flush=True)
        if args.detector_cost:
            with tempfile.TemporaryDirectory() as tmp:
                off = Path(tmp) / "off.yaml"
                off.write_text("detector:\n  enabled: false\n")
                wall_off, rss_off = measure([exe, str(before), str(after), "--out",
                                             str(Path(tmp) / "out"), "-q", "--threads",
                                             str(args.threads), "--config", str(off)])
            # the detector's own time: its stage, run on every worker at once
            workers = args.threads or os.cpu_count() or 1
            own = report["timings_s"].get("detector", 0.0) / workers
            print(f"        detector's own time {own:.2f} s = {own / read_s:.2f} plain reads "
                  f"(its stage's {report['timings_s'].get('detector', 0.0):.1f} thread-seconds "
                  f"over {workers} workers); the defaults against the detector off "
                  f"(the classical path, {wall_off:.2f} s, {wall_off / read_s:.2f} reads, peak "
                  f"{rss_off:.0f} MB): {wall - wall_off:+.2f} s = "
                  f"{(wall - wall_off) / read_s:+.2f} plain reads", flush=True)


if __name__ == "__main__":
    main()
